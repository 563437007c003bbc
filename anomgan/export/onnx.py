"""ONNX export of a single-pass detector: score images where anomgan is not installed.

Contract of the exported file
-----------------------------
Methods: the single-pass ones, ``ganomaly`` and ``dual-disc`` (:data:`EXPORTABLE`). The
latent-search methods (``noisy-gan``, ``anogan``) run hundreds of Adam steps per image; they are
refused with a ValueError that names the single-pass alternatives.

Input   ``images``: uint8 (N, C, S, S), N dynamic (>= 1), C = the detector's channels (1 grey,
        3 RGB), S = its image size; pixels as stored in an 8-bit image file (0..255), channels
        first.
Outputs ``scores``: float32 (N,), the image scores ``anomgan.detect`` gives for these images
        (the method's own score, or the patch top-n of the map when the scoring config's
        ``image_score`` is ``"patch_topn"``); ``maps``: float32 (N, S, S), the per-pixel maps
        |x - reconstruction| (mean over channels, [0, 1] image units), as ``detect`` gives them.
        Both agree with ``anomgan.detect`` to float32 rounding (tested within 1e-4).
An image is anomalous when ``score >= threshold`` or its score is not finite (NaN, ±inf), as in
anomgan. Inside the graph: uint8 -> float / 255, the method's networks (BatchNorm in eval mode),
and the pure-PyTorch reference math of anomgan's fused kernels written with standard ONNX
operators (the patch top-n is AveragePool + TopK + ReduceMean); opset :data:`OPSET`, default
ONNX domain only, so any ONNX runtime can run it.

Metadata (``metadata_props``, every value a string; JSON where marked):
    anomgan.export_version  "1" (this contract)
    anomgan.version         the anomgan version that wrote the file
    anomgan.method          "ganomaly" or "dual-disc"
    anomgan.image_size      S
    anomgan.channels        C
    anomgan.threshold       JSON: the threshold value (a number), or null without one
    anomgan.threshold_rule  JSON: {"value", "rule", "params"} of the threshold, or null
    anomgan.image_score     "native" or "patch_topn"
    anomgan.patch, anomgan.stride, anomgan.n
                            the patch top-n settings of the image score of tiled images (and of
                            "patch_topn"): windows patch x patch every stride pixels, the mean of
                            the n largest window means (all windows when there are fewer)
    anomgan.tile_overlap    pixels of overlap between tiles of a larger image (resolved: a
                            quarter of S unless the scoring config sets it)
    anomgan.input_mode      how anomgan scores an image of another size: "tile" (below) or
                            "resize" (resized to S x S as training read it, then scored)
    anomgan.scoring         JSON: the whole ScoringConfig
    anomgan.hparams         JSON: the method's hyper-parameters
    anomgan.info            JSON: the detector's info
    anomgan.defect_head     JSON: null, or (a detector trained with ``defect_head``) the head
                            file beside this one and its fusion statistics; ``scores`` is then
                            the method's score before fusion and ``anomgan.threshold`` applies
                            to the fused score: :mod:`anomgan.export.onnx_head`
    anomgan.features        JSON: null, or (a detector trained with ``features``) the feature
                            terms' file beside this one and their fusion statistics; ``scores``
                            is then the score before that fusion (and the head's) and
                            ``anomgan.threshold`` applies to the fused score:
                            :mod:`anomgan.export.onnx_features`
:func:`read_metadata` reads them back into Python values.

Images larger than S (both sides >= S; input_mode "tile", the default): tile them around the
graph as anomgan does (tiles every S - tile_overlap pixels, the last one flush with the border;
hann-window blending of the tile maps; image score = patch top-n of the blended map). The
README's "Export" section has a numpy recipe, tested against ``anomgan.detect``. (A "resize"
detector resizes with torch's antialiased bilinear filter, which that recipe does not
reproduce.)

The file is written atomically (a temporary file beside it, then one rename). Errors: ValueError
for an unsupported method or a scoring config that does not fit the model size, before any
work; :class:`anomgan.fileio.WriteError` (an OSError naming the file) when it cannot be written;
IsADirectoryError when ``path`` is a folder; ImportError naming the package when ``onnx`` is
missing (``pip install anomgan[export]``).
"""
from __future__ import annotations

import io
import json
import os
import warnings
from typing import Any

import torch

from .onnx_features import features_metadata, features_onnx_bytes, features_path
from .onnx_head import head_metadata, head_onnx_bytes, head_path

EXPORTABLE = ("ganomaly", "dual-disc")
LATENT_SEARCH = ("noisy-gan", "anogan")  # refused, with the reason
EXPORT_VERSION = 1
OPSET = 17
INPUT, OUTPUTS = "images", ("scores", "maps")
PREFIX = "anomgan."

__all__ = ["EXPORTABLE", "EXPORT_VERSION", "OPSET", "export_onnx", "onnx_bytes", "metadata",
           "patch_topn", "read_metadata"]


class _Graph(torch.nn.Module):
    """uint8 (N, C, S, S) -> (scores (N,), maps (N, S, S)) through the detector's own scoring
    code at the model size, with the pure-PyTorch ("torch") backend of the fused ops."""

    def __init__(self, detector):
        from ..scoring.patches import patch_grid

        super().__init__()
        self.method = detector.method  # registered, so its weights become the graph's initializers
        self._detector = detector
        cfg, s = detector.scoring, detector.image_size
        # the window grid of Detector._map_scores at the model size, as Python ints (a config
        # that does not fit the model size is the ValueError detect would raise)
        self._grid = (patch_grid(s, s, cfg.patch, cfg.stride, cfg.n)
                      if cfg.image_score == "patch_topn" else None)

    def forward(self, images: torch.Tensor):
        x = images.to(torch.float32).div(255.0)  # as anomgan.data.to_batch reads uint8
        scores, maps = self._detector.score_model_size(x, "torch")
        if self._grid is not None:  # image_score "patch_topn", as Detector.score_tensor
            scores = patch_topn(maps, *self._grid)
        return scores, maps


def patch_topn(maps: torch.Tensor, patch: int, stride: int, n: int) -> torch.Tensor:
    """(B,) mean of the n largest patch x patch window means (every stride pixels) of maps
    (B, H, W): :func:`anomgan.ops.patch_topn_l1_reference` on a map, in standard ONNX operators
    (AveragePool, TopK, ReduceMean)."""
    pmap = torch.nn.functional.avg_pool2d(maps.unsqueeze(1), kernel_size=patch, stride=stride)
    return pmap.flatten(1).topk(n, dim=1).values.mean(dim=1)


def _check_method(detector) -> None:
    from ..detector import Detector

    if not isinstance(detector, Detector):
        raise TypeError(f"export: expected an anomgan Detector, got {type(detector).__name__}")
    name = detector.method_name
    if name not in EXPORTABLE:
        alternatives = " or ".join(repr(m) for m in EXPORTABLE)
        why = (" (it scores each image by a latent search, hundreds of optimisation steps per "
               "image, which has no single-pass graph)" if name in LATENT_SEARCH else "")
        raise ValueError(
            f"export: method {name!r} cannot be exported to ONNX{why}; only the single-pass "
            f"methods can: train one of {alternatives} instead (e.g. anomgan.train(..., "
            f"method='dual-disc') or `anomgan train --method ganomaly`) and export that")
    if detector.scoring.map_norm != "none":
        raise ValueError(
            f"export: this detector standardises its maps per pixel position "
            f"(scoring.map_norm={detector.scoring.map_norm!r}), which the exported graph does not "
            f"do yet; export a detector trained with map_norm='none'")
    for part, what, fit in (("head", "the defect head", "fit_defect_head"),
                            ("features", "the feature terms", "fit_features")):
        if getattr(detector, part, None) is not None and getattr(detector, part).fusion is None:
            raise ValueError(f"export: {what} has no fusion statistics ({fit} was not finished); "
                             f"nothing consistent to export")


def _tile_overlap(detector) -> int:
    ov = detector.scoring.tile_overlap
    return detector.image_size // 4 if ov is None else int(ov)


def metadata(detector, path: str | None = None) -> dict[str, str]:
    """The ``metadata_props`` written into the file (see the module doc), as str -> str;
    ``path``: where the file goes (names the defect head's file beside it)."""
    from .. import __version__

    cfg, thr = detector.scoring, detector.threshold
    meta = {
        "export_version": str(EXPORT_VERSION),
        "version": __version__,
        "method": detector.method_name,
        "image_size": str(detector.image_size),
        "channels": str(detector.channels),
        "threshold": json.dumps(None if thr is None else thr.value),
        "threshold_rule": json.dumps(None if thr is None else thr.to_dict()),
        "image_score": cfg.image_score,
        "patch": str(cfg.patch),
        "stride": str(cfg.stride),
        "n": str(cfg.n),
        "tile_overlap": str(_tile_overlap(detector)),
        "input_mode": getattr(detector, "input_mode", "tile"),
        "scoring": json.dumps(cfg.to_dict()),
        "hparams": json.dumps(detector.method.hparams()),
        "info": json.dumps(detector.info),
        "defect_head": json.dumps(head_metadata(detector, path or "model.onnx")),
        "features": json.dumps(features_metadata(detector, path or "model.onnx")),
    }
    return {PREFIX + k: v for k, v in meta.items()}


_INTS = ("export_version", "image_size", "channels", "patch", "stride", "n", "tile_overlap")
_JSON = ("threshold", "threshold_rule", "scoring", "hparams", "info", "defect_head", "features")


def read_metadata(model) -> dict[str, Any]:
    """The anomgan metadata of an exported file (a path, bytes or an ``onnx.ModelProto``), keys
    without the ``anomgan.`` prefix, ints and JSON values decoded. ValueError when the file has
    none (not written by anomgan)."""
    onnx = _import_onnx()
    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    elif not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    raw = {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
    if "export_version" not in raw:
        raise ValueError("read_metadata: not an ONNX file exported by anomgan (no anomgan.* "
                         "metadata)")
    out: dict[str, Any] = dict(raw)
    for k in _INTS:
        if k in out:
            out[k] = int(out[k])
    for k in _JSON:
        if k in out:
            out[k] = json.loads(out[k])
    return out


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"export to ONNX needs the onnx package ({exc}); install it with "
                          "`pip install onnx==1.23.2` (or `pip install anomgan[export]`, which "
                          "also brings onnxruntime to run the file)") from None
    return onnx


def onnx_bytes(detector, path: str | None = None) -> bytes:
    """The serialized ONNX model of ``detector`` (see the module doc), checked with the ONNX
    checker and for operators outside the default ONNX domain; ``path``: where it will be
    written (the defect head's file name in the metadata is taken from it)."""
    _check_method(detector)
    onnx = _import_onnx()
    s, c = detector.image_size, detector.channels
    graph = _Graph(detector)
    # traced at N = 2 so that nothing specialises to one image; N is dynamic in the file
    dummy = torch.zeros(2, c, s, s, dtype=torch.uint8, device=detector._device())
    buf = io.BytesIO()
    dynamic = {INPUT: {0: "N"}, OUTPUTS[0]: {0: "N"}, OUTPUTS[1]: {0: "N"}}
    was_training = detector.method.training
    graph.eval()  # the exporter restores the wrapper's mode afterwards, and with it the method's
    try:
        with warnings.catch_warnings():
            # the TorchScript-based exporter (dynamo=False) is deprecated from torch 2.9 on; it
            # needs no onnxscript and exports these small convolutional graphs exactly
            warnings.simplefilter("ignore", DeprecationWarning)
            # the methods' shape checks compare trace-time sizes: constants, not graph inputs
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(graph, (dummy,), buf, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=list(OUTPUTS),
                              dynamic_axes=dynamic, do_constant_folding=True)
    finally:
        detector.method.train(was_training)
    model = onnx.load_from_string(buf.getvalue())
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node
                      if n.domain not in ("", "ai.onnx")})
    if foreign:  # a custom op slipped in: the file would not run on a stock ONNX runtime
        raise RuntimeError(f"export: the graph holds non-standard operators {foreign}")
    from .. import __version__

    model.producer_name, model.producer_version = "anomgan", __version__
    model.doc_string = (f"anomgan {detector.method_name} detector: images uint8 (N, {c}, {s}, {s}) "
                        f"-> scores float32 (N,), maps float32 (N, {s}, {s}); see the anomgan.* "
                        "metadata")
    onnx.helper.set_model_props(model, metadata(detector, path))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _check_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"export: path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not path:
        raise ValueError("export: path is empty; give a file name such as model.onnx")
    if os.path.isdir(path):
        raise IsADirectoryError(f"export: {path} is a folder; give a file name such as "
                                f"{os.path.join(path, 'model.onnx')}")
    return path


def export_onnx(detector, path) -> None:
    """Write ``detector`` as an ONNX file to ``path``, atomically (see the module doc)."""
    from ..fileio import WriteError, atomic_write_bytes

    _check_method(detector)
    path = _check_path(path)
    data = onnx_bytes(detector, path)
    files = [(path, data)]
    # the head's and the features' files first: the method file names them
    if getattr(detector, "head", None) is not None:
        files.insert(0, (head_path(path), head_onnx_bytes(detector, OPSET)))
    if getattr(detector, "features", None) is not None:
        files.insert(0, (features_path(path), features_onnx_bytes(detector, OPSET)))
    for target, blob in files:
        existed = os.path.exists(target)
        try:
            atomic_write_bytes(target, blob)
        except WriteError:
            raise
        except OSError as exc:  # e.g. no permission to create the folder or the temporary file
            raise WriteError(target, exc, existed) from exc
