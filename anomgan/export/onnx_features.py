"""ONNX export of a detector's pretrained-feature terms (:mod:`anomgan.scoring.feature_score`),
beside the method's file (and the defect head's, if any).

A detector trained with ``features`` exports one more file, :func:`features_path`
(``model.onnx`` -> ``model.features.onnx``): the frozen backbone and the fitted terms.

Input   ``features_input``: float32 (N, C, S_f, S_f), N dynamic, S_f the terms' ``size``: the
        image as the detector's networks read it (the whole image of a tiled detector; a
        model-size image otherwise), pixels in [0, 1], resized to S_f x S_f by an antialiased
        bilinear filter (torch's ``antialias=True``; Pillow's BILINEAR resize of a float
        image matches it to ~1e-5) and clamped to [0, 1].
Outputs one float32 (N,) output per term the detector has, named as the term: ``logistic``
        (the logistic regression of the pooled features) and / or ``patch`` (the largest
        distance from a patch feature to the nearest bank entry; the bank is an initializer,
        and the search is the plain one: MatMul, ReduceMin, ReduceMax, so an image of 224 x
        224 against the default bank holds a 196 x 40,000 float32 matrix: ~31 MB an image).

The method file's metadata ``anomgan.features`` (JSON; null without features) holds ``file``
(the features file's name, beside it), ``size`` (S_f), ``weight`` (w), ``terms`` (the outputs'
names) and ``fusion`` ({score_mean, score_std, <term>_mean, <term>_std}). The fused score,
which ``anomgan.threshold`` applies to, is, with s the detector's score before the features
(the method's, fused with its defect head first when it has one),
``(s - score_mean) / score_std + w sum over terms of (t - <t>_mean) / <t>_std``. The README's
"score_fused.py" recipe does it with numpy and Pillow, tested against ``anomgan.detect``.
"""
from __future__ import annotations

import io
import os
import warnings

import torch
import torch.nn.functional as F

from .onnx_head import beside

INPUT = "features_input"

__all__ = ["features_path", "features_metadata", "features_onnx_bytes"]


def features_path(path: str) -> str:
    """The features file beside the method file ``path`` (``x.onnx`` -> ``x.features.onnx``)."""
    return beside(path, "features")


def features_metadata(detector, path: str) -> dict | None:
    """The ``anomgan.features`` value (see the module doc), or None without features."""
    fs = getattr(detector, "features", None)
    if fs is None:
        return None
    return {"file": os.path.basename(features_path(path)), "size": fs.config.size,
            "weight": fs.config.weight, "terms": list(fs.terms), "backbone": fs.config.backbone,
            "fusion": dict(fs.fusion)}


class _FeatureTerms(torch.nn.Module):
    """float32 (N, C, S_f, S_f) in [0, 1] -> one (N,) tensor per term (module doc), as
    :meth:`anomgan.scoring.feature_score.FeatureScore.term_values` computes them."""

    def __init__(self, fs):
        from ..features import backbone

        super().__init__()
        self.net = backbone(fs.config.backbone)  # the inference form: BatchNorms folded
        self.terms = fs.terms
        if fs.logistic is not None:
            lg = fs.logistic
            self.register_buffer("mean", lg["mean"].float())
            self.register_buffer("coef", (lg["coef"] / lg["scale"]).float())  # w / s
            self.register_buffer("intercept", lg["intercept"].float())
        if fs.bank is not None:
            bank = fs.bank.float()
            self.register_buffer("bank_t", bank.T.contiguous())
            self.register_buffer("bank_sq", (bank * bank).sum(1))

    def forward(self, images: torch.Tensor):
        from ..features import feature_maps

        glob, patches = feature_maps(self.net, images)
        out = []
        if "logistic" in self.terms:
            out.append((glob - self.mean) @ self.coef + self.intercept)
        if "patch" in self.terms:
            q = patches.flatten(2).transpose(1, 2)                        # (N, P, D)
            d2 = (q * q).sum(2, keepdim=True) + self.bank_sq - 2 * (q @ self.bank_t)
            out.append(F.relu(d2.amin(2)).sqrt().amax(1))
        return tuple(out)


def features_onnx_bytes(detector, opset: int) -> bytes:
    """The serialized ONNX model of ``detector.features`` (see the module doc), checked; the
    caller (:func:`anomgan.export.onnx.export_onnx`) has checked that the terms are fitted."""
    from .onnx import _import_onnx

    onnx = _import_onnx()
    fs = detector.features
    s, c = fs.config.size, detector.channels
    graph = _FeatureTerms(fs).eval()
    names = list(fs.terms)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(graph, (torch.zeros(2, c, s, s),), buf, dynamo=False, opset_version=opset,
                          input_names=[INPUT], output_names=names,
                          dynamic_axes={INPUT: {0: "N"}, **{k: {0: "N"} for k in names}},
                          do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    from .. import __version__

    model.producer_name, model.producer_version = "anomgan", __version__
    model.doc_string = (f"anomgan feature terms ({fs.config.backbone}): {INPUT} float32 (N, {c}, "
                        f"{s}, {s}) in [0, 1] -> {', '.join(names)} float32 (N,); fused with the "
                        f"method file's scores (anomgan.features)")
    onnx.checker.check_model(model)
    return model.SerializeToString()
