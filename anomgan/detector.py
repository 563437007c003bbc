"""The Detector: the one artifact users keep, and how it scores images.

A Detector holds a trained method (its networks and hyper-parameters), the preprocessing it
expects (image size and channels, images as floats in [0, 1]), the scoring settings and an
optional calibrated threshold. ``det.save(path)`` writes one file (safetensors weights + JSON
metadata with a format version, atomically); ``anomgan.load(path)`` reads it back and refuses
truncated, corrupted, newer-format or foreign files. Nothing is ever unpickled.

Scoring (``det.detect``)
------------------------
* Images at the model size: the method's own score (``method.score(x, scoring, backend=...)``:
  each method owns it; see :mod:`anomgan.models`), unless ``scoring.image_score`` is
  ``"patch_topn"``. Maps are per-pixel residuals |x − reconstruction| (mean over channels),
  or, with a segmenter (:meth:`Detector.fit_segmenter`), its per-pixel defect probabilities.
* ``input_mode`` (chosen at training time, stored in the file; files written before it existed
  read as "tile"): how an image of another size is scored. "resize": the image is resized
  to the model size exactly as training read it (:func:`anomgan.data.ingest.resize`), scored
  there, and its map resized back to the input's size (bilinear); the image score is the
  model-size one. "tile": as follows.
* Larger images (both sides >= the model size, e.g. 1024×1024 for a 64-pixel model): cut into
  overlapping tiles, the tiles of every image of the batch scored together in chunks of
  ``batch_size`` tiles, the per-tile maps blended back to the input resolution; the image score
  is the patch top-n over the stitched map (:func:`anomgan.scoring.patches.map_scores`).
* An image's score never depends on the rest of its batch: networks run in eval mode, latent
  searches are per sample with starts that do not depend on the batch, and nothing is
  normalised by batch or test-set statistics.
* A score that is not finite (NaN or ±inf) never counts as ok: the image is labelled anomalous,
  with or without a threshold, and its result note says "non-finite score". ``load`` refuses
  files whose weights are not finite, and ``calibrate`` refuses non-finite validation scores.
* ``backend=`` is checked the same way for every method (ValueError for an unknown name,
  BackendUnavailableError for one that cannot run here), even for methods that run no fused op.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch

from . import __version__
from ._validate import check_choice, check_int
from .data import to_batch
from .data.ingest import INPUT_MODES, resize
from .fileio import BundleError, load_bundle, save_bundle
from .ops._backends import BACKENDS, resolve_backend
from .scoring.config import ScoringConfig
from .scoring.patches import map_scores
from .scoring.defect_head import DefectHead, DefectHeadConfig, head_inputs
from .scoring.feature_score import FeatureScore, FeatureScoreConfig
from .scoring.segmenter import Segmenter, SegmenterConfig
from .scoring.reference import PositionReference, PositionStats
from .scoring.result import DetectionResult
from .scoring.thresholds import Threshold, from_labelled_f1, from_normal_fpr, from_normal_quantile
from .scoring.tiling import tiled_apply

__all__ = ["Detector", "ScoringConfig", "FORMAT_VERSION"]

FORMAT_VERSION = 1
KIND = "detector"


class Detector:
    """A trained method plus everything needed to score images with it (see the module doc)."""

    def __init__(self, method, *, scoring: ScoringConfig | dict | None = None,
                 threshold: Threshold | None = None, info: dict[str, Any] | None = None,
                 input_mode: str = "tile"):
        from .models.base import Method

        if not isinstance(method, Method):
            raise TypeError(f"Detector: method must be an anomgan Method, got {type(method).__name__}")
        self.method = method.eval()
        if isinstance(scoring, dict):
            scoring = ScoringConfig.from_dict(scoring)
        self.scoring = scoring or ScoringConfig()
        if threshold is not None and not isinstance(threshold, Threshold):
            raise TypeError(f"Detector: threshold must be a Threshold or None, got {type(threshold).__name__}")
        self.threshold = threshold
        self.info = dict(info or {})
        self.input_mode = check_choice("Detector", "input_mode", input_mode, INPUT_MODES)
        self._size_warned: set[tuple[int, int]] = set()  # image sizes already warned about
        #: per-pixel-position statistics of normal maps (scoring.map_norm="position"), or None
        self.reference: PositionReference | None = None
        #: the defect head learned from labelled defects (:meth:`fit_defect_head`), or None
        self.head: DefectHead | None = None
        #: the defect segmenter whose maps replace the method's (:meth:`fit_segmenter`), or None
        self.segmenter: Segmenter | None = None
        #: the pretrained-feature terms fused into the image score (:meth:`fit_features`), or None
        self.features: FeatureScore | None = None

    # ---- description ------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.method.image_size

    @property
    def channels(self) -> int:
        return self.method.channels

    @property
    def method_name(self) -> str:
        return type(self.method).name

    def describe(self) -> dict[str, Any]:
        """Flat, human-readable settings (for reports and the CLI)."""
        d = {"method": self.method_name, "image size": self.image_size, "channels": self.channels,
             "input mode": self.input_mode}
        d.update({f"hp.{k}": v for k, v in self.method.hp.items()})
        d.update({f"scoring.{k}": v for k, v in self.scoring.to_dict().items()})
        d["threshold"] = "none" if self.threshold is None else (
            f"{self.threshold.value:.6g} ({self.threshold.rule} {self.threshold.params})")
        if self.reference is not None:
            d["reference"] = (f"{self.reference.size[0]}x{self.reference.size[1]} position "
                              f"statistics of {self.reference.images} normal images")
        if self.head is not None:
            d.update({f"defect_head.{k}": v for k, v in self.head.config.to_dict().items()})
        if self.segmenter is not None:
            d.update({f"segmenter.{k}": v for k, v in self.segmenter.config.to_dict().items()})
        if self.features is not None:
            d.update({f"features.{k}": v for k, v in self.features.config.to_dict().items()})
            d["features.terms"] = ", ".join(self.features.terms)
        d.update({f"info.{k}": v for k, v in self.info.items()})
        return d

    def __repr__(self) -> str:
        thr = None if self.threshold is None else round(self.threshold.value, 6)
        return (f"Detector(method={self.method_name!r}, image_size={self.image_size}, "
                f"channels={self.channels}, input_mode={self.input_mode!r}, threshold={thr})")

    # ---- file -------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the detector to ``path`` (one safetensors file), atomically."""
        state = self.method.state_dict()
        bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(f"Detector.save: state entries {bad} are not tensors")
        meta = {
            "method": self.method_name,
            "hparams": self.method.hparams(),
            "scoring": self.scoring.to_dict(),
            "threshold": None if self.threshold is None else self.threshold.to_dict(),
            "info": self.info,
            "input_mode": self.input_mode,
            "anomgan_version": __version__,
        }
        tensors = {f"method.{k}": v for k, v in state.items()}
        if self.reference is not None:
            meta["reference"] = {"images": int(self.reference.images), "floor": self.reference.floor}
            tensors["reference.mean"] = self.reference.mean.contiguous()
            tensors["reference.std"] = self.reference.std.contiguous()
        if self.head is not None:
            meta["defect_head"], head_tensors = self.head.state()
            tensors.update(head_tensors)
        if self.segmenter is not None:
            meta["segmenter"], seg_tensors = self.segmenter.state()
            tensors.update(seg_tensors)
        if self.features is not None:
            meta["features"], feature_tensors = self.features.state()
            tensors.update(feature_tensors)
        save_bundle(path, tensors, meta, kind=KIND, format_version=FORMAT_VERSION)

    @classmethod
    def load(cls, path, *, device: str | torch.device = "cpu") -> "Detector":
        """Read a detector written by :meth:`save`; raises BundleError on a bad file, including
        one whose weights are not finite (NaN/inf) or whose settings exceed the limits of
        :class:`ScoringConfig` and of the methods' size hyper-parameters. The file's scoring
        settings are kept as stored (a file written with 500 search steps scores with 500);
        a setting the file predates reads as what it scored with
        (:meth:`ScoringConfig.from_stored`), not as today's default."""
        from .models import get_method

        tensors, meta, _ = load_bundle(path, kind=KIND, max_format_version=FORMAT_VERSION)
        _check_finite(path, tensors)
        try:
            method = get_method(meta["method"]).from_stored(meta["hparams"])
            state = {k[len("method."):]: v for k, v in tensors.items() if k.startswith("method.")}
            method.load_state_dict(state, strict=True)
            thr = meta.get("threshold")
            det = cls(method.to(device), scoring=ScoringConfig.from_stored(meta["scoring"]),
                      threshold=None if thr is None else Threshold.from_dict(thr),
                      info=meta.get("info") or {}, input_mode=meta.get("input_mode", "tile"))
            ref = meta.get("reference")
            if ref is not None:
                det.reference = PositionReference(tensors["reference.mean"], tensors["reference.std"],
                                                  int(ref["images"]), float(ref["floor"]))
            if meta.get("defect_head") is not None:
                det.head = DefectHead.from_state(meta["defect_head"], tensors)
            if meta.get("segmenter") is not None:
                if int(meta["segmenter"]["channels"]) != det.channels:
                    raise ValueError(f"segmenter of {meta['segmenter']['channels']} channels on "
                                     f"a {det.channels}-channel detector")
                det.segmenter = Segmenter.from_state(meta["segmenter"], tensors).to(device)
            if meta.get("features") is not None:
                det.features = FeatureScore.from_state(meta["features"], tensors)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise BundleError(f"{path}: a detector file whose contents do not fit together "
                              f"(corrupted or edited? {type(exc).__name__}: {exc})") from None
        return det

    def export(self, path, format: str = "onnx") -> None:
        """Write a standalone model file that scores model-size uint8 images without anomgan
        (``format="onnx"``: scores and maps, the threshold and settings as metadata; the
        single-pass methods only). Contract and errors: :mod:`anomgan.export.onnx`."""
        from .export import export

        export(self, path, format=format)

    # ---- scoring ----------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.method.parameters()).device

    def compile(self, *, compiler: str | None = "auto", cuda_graphs: bool = True,
                dtype: torch.dtype | None = None, calibration=None) -> "Detector":
        """Score through the compiled single-pass path from now on; returns ``self``.

        For a single-pass method (``ganomaly``, ``dual-disc``): an inference copy of the method
        (BatchNorm folded; on the CPU transposed convolutions oneDNN runs slowly rewritten as
        plain ones, channels_last), its ``score`` under ``torch.compile(backend=compiler)``
        (None: no torch.compile; "auto": inductor on CUDA, none on the CPU, where inductor
        measured no faster than the copy) and, on CUDA with ``cuda_graphs``, CUDA graphs
        captured per batch shape (:mod:`anomgan.scoring.compiled`). Scores and maps equal the eager ones
        within float32 rounding (1e-5). The copy is a snapshot of the weights: it is remade
        when the method's weights change, are replaced or moved. The first call for a batch
        shape compiles (seconds); ``Detector.uncompile()`` goes back to the eager path.
        ``dtype=torch.bfloat16`` runs the networks in bfloat16 (opt-in; 2-3x faster on CPUs
        with AVX512-BF16/AMX and on GPUs): scores then differ from float32 ones by ~1e-3
        relative, so calibrate the threshold on the compiled detector.
        ``dtype=torch.qint8`` (CPU only) runs the networks in int8 (``anomgan.scoring.quantized``:
        static post-training quantization, ~3-4x faster than eager float32 on a CPU with
        AVX512-VNNI at ganomaly's paper size); it needs ``calibration``: normal images in any
        form :meth:`detect` accepts (at least one; a few dozen to a few hundred), scored once
        through the detector's own path (resize or tiles) to set the int8 ranges. Scores then
        differ from float32 ones (correlation ~0.99+), so calibrate the threshold again
        (:meth:`calibrate`) after compiling.

        Latent-search methods (``anogan``, ``noisy-gan``): a no-op. Their search already runs on
        frozen copies (BatchNorm folded, channels_last), fused ops and, on CUDA, a CUDA graph of
        the search step; the per-image optimisation loop is not a graph torch.compile can take
        whole."""
        from .scoring.compiled import CompiledScorer

        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"compile: dtype must be a torch.dtype (torch.bfloat16, torch.qint8) "
                            f"or None, got {type(dtype).__name__}")
        if dtype == torch.qint8:
            if calibration is None:
                raise ValueError("compile(dtype=torch.qint8): calibration is required: normal "
                                 "images (a list, a tensor or paths) to set the int8 ranges")
            images = to_batch(calibration, channels=self.channels)
            if len(images) < 1:
                raise ValueError("compile(dtype=torch.qint8): calibration holds no image")
        elif calibration is not None:
            raise ValueError(f"compile: calibration is only used with dtype=torch.qint8, got "
                             f"dtype={dtype}")
        self._compile_opts = None
        self._compiled = None
        if getattr(type(self.method), "single_pass", False):
            self._compile_opts = {"compiler": compiler, "cuda_graphs": cuda_graphs, "dtype": dtype}
            if dtype == torch.qint8:
                self._compile_opts["calibrate"] = lambda score: self._score_through(score, images)
            self._compiled = CompiledScorer(self.method, **self._compile_opts)
        return self

    def _score_through(self, score, images: torch.Tensor) -> None:
        """Score ``images`` with ``score`` (x, scoring, backend) in place of the method's own
        score, through this detector's path (resize or tiles, map standardisation)."""
        saved = getattr(self, "_compile_opts", None), getattr(self, "_compiled", None)
        self._compile_opts, self._compiled = {}, _FixedScorer(score)
        try:
            self._score_maps(images)
        finally:
            self._compile_opts, self._compiled = saved

    def uncompile(self) -> "Detector":
        """Back to the eager scoring path (drops the compiled copy); returns ``self``."""
        self._compile_opts = self._compiled = None
        return self

    @property
    def compiled(self) -> bool:
        """True when :meth:`compile` set up a compiled path (single-pass methods only)."""
        return getattr(self, "_compile_opts", None) is not None

    def _scorer(self):
        """The method's score function: the compiled one (remade when stale) or the eager one."""
        opts = getattr(self, "_compile_opts", None)
        if opts is None:
            return self.method.score
        if not self._compiled.is_current(self.method):
            from .scoring.compiled import CompiledScorer

            self._compiled = CompiledScorer(self.method, **opts)
        return self._compiled

    def score_model_size(self, x: torch.Tensor, backend: str | None = None):
        """(scores (N,), maps (N, s, s)) float32 of images already at the model size, in [0, 1]:
        the method's own score under this detector's scoring settings; with a segmenter the maps
        are its defect probabilities (the image score is then the patch top-n of those; the
        networks do not run at all when the segmenter reads the image alone, and the returned
        scores are then the maps' maxima)."""
        seg = self.segmenter
        if seg is not None and not seg.uses_residual:
            maps = seg.maps(x.to(self._device()), None)
            return maps.flatten(1).amax(1), maps
        scores, maps = self._scorer()(x, self.scoring, backend=backend)
        if seg is not None:
            maps = seg.maps(x.to(maps.device), maps)
        return scores.float(), maps.float()

    def _map_scores(self, maps: torch.Tensor, backend: str | None) -> torch.Tensor:
        cfg = self.scoring
        return map_scores(maps, cfg.patch, cfg.stride, cfg.n, backend=backend)

    def score_tensor(self, x: torch.Tensor, *, backend: str | None = None,
                     batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (B,), maps (B, H, W)) of a float (B, C, H, W) tensor in [0, 1] with
        C == channels and H, W >= image_size. ``backend`` is validated here for every method.
        With a defect head and / or feature terms the scores are the fused ones
        (:mod:`anomgan.scoring.defect_head`, then :mod:`anomgan.scoring.feature_score`)."""
        scores, maps = self._score_with_head(x, backend, batch_size)
        if self.features is not None:
            scores = self.features.fuse(scores, self._as_networks_read(x), self._device())
        return scores, maps

    def _as_networks_read(self, x: torch.Tensor) -> torch.Tensor:
        """Images as the networks read them: a "resize" detector's at the model size."""
        s = self.image_size
        if self.input_mode == "resize" and tuple(x.shape[-2:]) != (s, s):
            return resize(x, (s, s))
        return x

    def _score_with_head(self, x: torch.Tensor, backend, batch_size):
        """:meth:`score_tensor` without the feature terms."""
        if self.head is None:
            return self._score_maps(x, backend=backend, batch_size=batch_size)
        scores, maps, u = self._scores_maps_head_inputs(x, self.head.config.size, backend, batch_size)
        return self.head.fuse(scores, self.head.logits(u)), maps

    def _scores_maps_head_inputs(self, x: torch.Tensor, size: int, backend, batch_size=None):
        """(scores, maps, head inputs (B, 2, size, size)) of images ``x``: the head reads what
        the networks read (a "resize" detector: the model-size image and map)."""
        s = self.image_size
        if self.input_mode == "resize" and tuple(x.shape[-2:]) != (s, s):
            xs = resize(x, (s, s))
            scores, ms = self._score_maps(xs, backend=backend, batch_size=batch_size)
            return scores, _upsample(ms, tuple(x.shape[-2:])), head_inputs(xs, ms, size)
        scores, maps = self._score_maps(x, backend=backend, batch_size=batch_size)
        return scores, maps, head_inputs(x, maps, size)

    def _score_maps(self, x: torch.Tensor, *, backend: str | None = None,
                    batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`score_tensor` without the defect head: the method's scores and maps."""
        s, cfg = self.image_size, self.scoring
        backend = _check_backend(backend, self._device())
        bs = check_int("detect", "batch_size", cfg.batch_size if batch_size is None else batch_size,
                       minimum=1)
        B, C, H, W = x.shape
        if C != self.channels:
            raise ValueError(f"detect: images have {C} channels, the detector expects {self.channels}")
        if self.input_mode == "resize" and (H, W) != (s, s):
            scores, maps = self._score_maps(resize(x, (s, s)), backend=backend, batch_size=bs)
            return scores, _upsample(maps, (H, W))
        scores, maps = self._score_native(x, backend, bs)
        if cfg.map_norm == "position":
            if self.reference is None:
                raise RuntimeError("detect: this detector standardises its maps per pixel position "
                                   "(scoring.map_norm='position') but has no reference yet: call "
                                   "det.fit_reference(normal_images) (train() does it)")
            maps = self.reference.standardise(maps)
            scores = self._map_scores(maps, backend)
        return scores, maps

    def _score_native(self, x: torch.Tensor, backend: str | None, bs: int):
        """(scores, maps) of images at their scoring size (the model size, or tiled when
        larger), before any map standardisation."""
        s, cfg = self.image_size, self.scoring
        B, C, H, W = x.shape
        if H < s or W < s:
            raise ValueError(f"detect: images of {H}x{W} are smaller than the detector's input "
                             f"size {s}x{s}; resize them (the detector was trained at {s}x{s})")
        x = x.to(self._device())
        if (H, W) == (s, s):
            outs = [self.score_model_size(x[i:i + bs], backend) for i in range(0, B, bs)]
            scores = torch.cat([o[0] for o in outs])
            maps = torch.cat([o[1] for o in outs])
            if cfg.image_score == "patch_topn":
                scores = self._map_scores(maps, backend)
            return scores, maps
        _, maps = tiled_apply(lambda t: self.score_model_size(t, backend), x, s,
                              overlap=cfg.tile_overlap, max_tiles=bs)
        return self._map_scores(maps, backend), maps

    def detect(self, batch, *, backend: str | None = None, batch_size: int | None = None,
               names: list[str] | None = None) -> DetectionResult:
        """Score a batch (see :func:`anomgan.data.to_batch` for what is accepted).

        An image is labelled anomalous when its score >= the threshold (all False without
        one), and always when its score is not finite (NaN/±inf, e.g. broken weights or
        input): such an image never counts as ok, and its note in the result (``notes``,
        ``to_records()``'s "note") says "non-finite score"."""
        import os

        if names is None and isinstance(batch, (list, tuple)) and batch and all(
                isinstance(b, (str, os.PathLike)) for b in batch):
            names = [os.fspath(b) for b in batch]
        x = to_batch(batch, channels=self.channels)
        scores, maps = self.score_tensor(x, backend=backend, batch_size=batch_size)
        scores, maps = scores.cpu(), maps.cpu()
        self._warn_if_calibrated_on_other_size(tuple(maps.shape[-2:]))
        if self.threshold is None:  # no threshold: only a non-finite score is flagged
            labels = ~torch.isfinite(scores)
            thr = None
        else:  # classify flags non-finite scores too
            labels = self.threshold.classify(scores)
            thr = self.threshold.value
        return DetectionResult(scores=scores, maps=maps, labels=labels, threshold=thr, names=names)

    def _warn_if_calibrated_on_other_size(self, size: tuple[int, int]) -> None:
        """A tiled detector's image score (the patch top-n of the stitched map) grows with the
        image: a threshold calibrated on images of another size does not hold. Warn once per
        size (the info key is written by :meth:`calibrate`; older files have none)."""
        cal = self.info.get("calibration_image_size")
        if self.threshold is None or self.input_mode != "tile" or not cal or tuple(cal) == size:
            return
        if size not in self._size_warned:
            self._size_warned.add(size)
            warnings.warn(f"detect: the threshold was calibrated on {cal[0]}x{cal[1]} images, these are "
                          f"{size[0]}x{size[1]}; a tiled detector's scores depend on the image size, so "
                          "recalibrate on normal images of this size (Detector.calibrate)",
                          UserWarning, stacklevel=3)

    # ---- calibration ------------------------------------------------------------------------
    def fit_reference(self, normal, *, max_images: int | None = 256, seed: int = 0,
                      backend: str | None = None, batch_size: int | None = None) -> "PositionReference":
        """Fit the per-pixel-position statistics of ``scoring.map_norm="position"``
        (:mod:`anomgan.scoring.reference`) on normal images (anything :meth:`detect` takes; one
        size), at most ``max_images`` of them (a seeded random subset; None: all), and keep them
        in the detector (saved with it). Returns the reference."""
        x = to_batch(normal, channels=self.channels)
        if x.shape[0] < 2:
            raise ValueError(f"fit_reference: needs at least 2 normal images, got {x.shape[0]}")
        if max_images is not None:
            check_int("fit_reference", "max_images", max_images, minimum=2)
            if x.shape[0] > max_images:
                gen = torch.Generator().manual_seed(seed)
                x = x[torch.randperm(x.shape[0], generator=gen)[:max_images].sort().values]
        s = self.image_size
        if self.input_mode == "resize" and tuple(x.shape[-2:]) != (s, s):
            x = resize(x, (s, s))
        backend = _check_backend(backend, self._device())
        bs = check_int("fit_reference", "batch_size", self.scoring.batch_size if batch_size is None
                       else batch_size, minimum=1)
        stats = PositionStats()
        chunk = max(1, bs // max(1, self._tiles_per_image(tuple(x.shape[-2:]))))
        for i in range(0, x.shape[0], chunk):
            stats.add(self._score_native(x[i:i + chunk].to(self._device()), backend, bs)[1])
        self.reference = stats.reference(self.scoring.map_norm_floor)
        return self.reference

    def fit_defect_head(self, normal, defects, fusion_normal, config=None, *, seed: int = 0,
                        backend: str | None = None, progress: bool = False) -> DefectHead:
        """Train the defect head (:mod:`anomgan.scoring.defect_head`) on ``normal`` against
        ``defects`` (labelled defective images), both read as :meth:`detect` reads them, and fit
        its fusion statistics on ``fusion_normal`` (>= 2 normal images the networks did not
        train on: the validation normals). ``config``: a
        :class:`~anomgan.scoring.defect_head.DefectHeadConfig`, a dict of its settings, or None
        (the defaults). From then on :meth:`detect` returns the fused image score; recalibrate
        the threshold afterwards (``train`` does). Returns the head."""
        cfg = DefectHeadConfig.from_any(True if config is None else config)
        if self.scoring.map_norm != "none":
            raise ValueError(f"fit_defect_head: the head reads residual maps, but this detector "
                             f"standardises its maps (scoring.map_norm={self.scoring.map_norm!r}); "
                             f"use map_norm='none' with a defect head")
        un = self._head_inputs_of(normal, "normal", cfg.size, backend)
        ud = self._head_inputs_of(defects, "defects", cfg.size, backend)
        uf, scores = self._head_inputs_of(fusion_normal, "fusion_normal", cfg.size, backend,
                                          with_scores=True)
        if uf.shape[0] < 2:
            raise ValueError(f"fit_defect_head: fusion_normal needs at least 2 images, got {uf.shape[0]}")
        with _progress_bar(progress, cfg.members * cfg.steps, "defect head", "step") as update:
            head = DefectHead.fit(un, ud, cfg, seed=seed,
                                  progress=None if update is None else (lambda m, k: update(1)))
        head.fit_fusion(scores, head.logits(uf))
        self.head = head
        return head

    def fit_features(self, normal, defects, fusion_normal, config=None, *, seed: int = 0,
                     backend: str | None = None, progress: bool = False) -> FeatureScore:
        """Fit the pretrained-feature terms (:mod:`anomgan.scoring.feature_score`) on
        ``normal`` (the training normals) and ``defects`` (labelled defective images, or None:
        the patch term only), and their fusion statistics on ``fusion_normal`` (>= 2 normal
        images neither the networks nor the terms were fitted on: the validation normals).
        ``config``: a :class:`~anomgan.scoring.feature_score.FeatureScoreConfig`, a dict of its
        settings, or None (the defaults). Fit after the defect head (the fusion takes the
        detector's score as it then is); recalibrate the threshold afterwards (``train`` does).
        Needs the backbone's weights package (ImportError naming it otherwise). Returns it."""
        cfg = FeatureScoreConfig.from_any(True if config is None else config)
        read = {}
        for name, images in (("normal", normal), ("defects", defects), ("fusion_normal", fusion_normal)):
            if images is None and name == "defects":
                read[name] = None
                continue
            try:
                read[name] = to_batch(images, channels=self.channels)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"fit_features: {name}: {exc}") from None
            if name != "fusion_normal":  # the fusion images are scored by detect's own path
                read[name] = self._as_networks_read(read[name])
            if read[name].shape[0] < (2 if name == "fusion_normal" else 1):
                raise ValueError(f"fit_features: {name} needs at least "
                                 f"{2 if name == 'fusion_normal' else 1} images, got {read[name].shape[0]}")
        # the fusion images' detector scores first: a bad image fails before the backbone runs
        xf = read["fusion_normal"]
        chunk = self._images_per_call(xf)
        try:
            scores = torch.cat([self._score_with_head(xf[i:i + chunk], backend, None)[0].cpu()
                                for i in range(0, xf.shape[0], chunk)])
        except ValueError as exc:
            raise ValueError(f"fit_features: fusion_normal: {exc}") from None
        total = read["normal"].shape[0] + (0 if read["defects"] is None else read["defects"].shape[0])
        with _progress_bar(progress, total, "features", "image") as update:
            terms = FeatureScore.fit(read["normal"], read["defects"], cfg, seed=seed, progress=update,
                                     device=self._device())
        terms.fit_fusion(scores, self._as_networks_read(xf), self._device())
        self.features = terms
        return terms

    def fit_segmenter(self, normal, config=None, *, seed: int = 0, progress: bool = False) -> Segmenter:
        """Train the defect segmenter (:mod:`anomgan.scoring.segmenter`) on synthetic anomalies
        planted in model-size crops of ``normal`` (the training normals, read as detect reads
        them: full size for a tile detector, resized to the model size for a resize detector).
        ``config``: a :class:`~anomgan.scoring.segmenter.SegmenterConfig`, a dict of its
        settings, or None (the defaults). From then on the detector's maps are the segmenter's
        and its image score their patch top-n; recalibrate the threshold afterwards (``train``
        does). Needs ``scoring.image_score == "patch_topn"`` and ``map_norm == "none"``."""
        cfg = SegmenterConfig.from_any(True if config is None else config)
        if self.scoring.image_score != "patch_topn":
            raise ValueError(f"fit_segmenter: the segmenter's maps are scored by their patch top-n; "
                             f"this detector scores images by {self.scoring.image_score!r}: use "
                             f"scoring image_score='patch_topn'")
        if self.scoring.map_norm != "none":
            raise ValueError(f"fit_segmenter: needs scoring map_norm='none', got "
                             f"{self.scoring.map_norm!r}")
        try:
            x = to_batch(normal, channels=self.channels)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"fit_segmenter: normal: {exc}") from None
        s = self.image_size
        if x.shape[0] < 1:
            raise ValueError("fit_segmenter: normal holds no images")
        if self.input_mode == "resize" and tuple(x.shape[-2:]) != (s, s):
            x = resize(x, (s, s))
        if x.shape[-2] < s or x.shape[-1] < s:
            raise ValueError(f"fit_segmenter: normal images of {x.shape[-2]}x{x.shape[-1]} are "
                             f"smaller than the model size {s}x{s}")
        gen = torch.Generator().manual_seed(seed + 7919)
        device = self._device()

        def crops(n: int) -> torch.Tensor:
            idx = torch.randint(x.shape[0], (n,), generator=gen)
            oy = torch.randint(x.shape[-2] - s + 1, (n,), generator=gen)
            ox = torch.randint(x.shape[-1] - s + 1, (n,), generator=gen)
            return torch.stack([x[i, :, y:y + s, z:z + s] for i, y, z in
                                zip(idx.tolist(), oy.tolist(), ox.tolist())]).to(device, torch.float32)

        def residual(xs: torch.Tensor) -> torch.Tensor:
            return self._scorer()(xs, self.scoring)[1].float()

        with _progress_bar(progress, cfg.steps, "segmenter", "step") as update:
            self.segmenter = Segmenter.fit(
                crops, residual if cfg.inputs == "image+residual" else None, cfg, self.channels,
                seed=seed, device=device, progress=None if update is None else (lambda k: update(1)))
        return self.segmenter

    def _head_inputs_of(self, images, name: str, size: int, backend, *, with_scores: bool = False):
        """Head inputs (N, 2, size, size) of images read as detect reads them (and their
        unfused scores when ``with_scores``), computed a chunk of images at a time."""
        try:
            x = to_batch(images, channels=self.channels)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"fit_defect_head: {name}: {exc}") from None
        if x.shape[0] < 1:
            raise ValueError(f"fit_defect_head: {name} holds no images")
        chunk = self._images_per_call(x)
        us, ss = [], []
        for i in range(0, x.shape[0], chunk):
            try:
                sb, _, ub = self._scores_maps_head_inputs(x[i:i + chunk], size, backend)
            except ValueError as exc:
                raise ValueError(f"fit_defect_head: {name}: {exc}") from None
            us.append(ub.cpu())
            ss.append(sb.cpu())
        u = torch.cat(us)
        return (u, torch.cat(ss)) if with_scores else u

    def _images_per_call(self, x: torch.Tensor) -> int:
        """Images of ``x`` to score a call so that one call holds about ``scoring.batch_size``
        model-size inputs (tiles of a tile detector; a resize detector's one per image)."""
        size = (self.image_size, self.image_size) if self.input_mode == "resize" else tuple(x.shape[-2:])
        return max(1, self.scoring.batch_size // max(1, self._tiles_per_image(size)))

    def _tiles_per_image(self, size: tuple[int, int]) -> int:
        from .scoring.tiling import plan_tiles

        s = self.image_size
        if size == (s, s) or size[0] < s or size[1] < s:
            return 1
        return plan_tiles(size[0], size[1], s, overlap=self.scoring.tile_overlap).tiles_per_image

    def calibrate(self, normal=None, *, images=None, labels=None, fpr: float | None = None,
                  quantile: float | None = None, backend: str | None = None) -> Threshold:
        """Set and return the threshold.

        From normal validation images only: ``calibrate(normal, fpr=0.05)`` (the threshold that
        flags at most that fraction of them) or ``calibrate(normal, quantile=0.99)``.
        From labelled images: ``calibrate(images=..., labels=...)`` (the F1-optimal threshold).
        Raises ValueError (and keeps the old threshold) when a validation score is not finite.
        """
        if normal is not None:
            if images is not None or labels is not None:
                raise ValueError("calibrate: give normal images, or images with labels, not both")
            if (fpr is None) == (quantile is None):
                raise ValueError("calibrate: with normal images give exactly one of fpr= or quantile=")
            result = self.detect(normal, backend=backend)
            scores = _finite_scores(result)
            thr = from_normal_fpr(scores, fpr) if fpr is not None else from_normal_quantile(scores, quantile)
        else:
            if images is None or labels is None:
                raise ValueError("calibrate: give normal images (with fpr= or quantile=), or "
                                 "images= with labels=")
            result = self.detect(images, backend=backend)
            scores = _finite_scores(result)
            thr = from_labelled_f1(labels, scores)
        self.threshold = thr
        self.info["calibration_image_size"] = list(result.maps.shape[-2:])
        return thr


class _FixedScorer:
    """A score function in the place of a compiled scorer (never stale)."""

    def __init__(self, score):
        self.score = score

    def is_current(self, method) -> bool:
        return True

    def __call__(self, x, scoring=None, backend=None):
        return self.score(x, scoring, backend=backend)


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) maps -> (B, H, W), bilinear (a "resize" detector's maps at the input's size)."""
    return torch.nn.functional.interpolate(maps[:, None], size=size, mode="bilinear",
                                           align_corners=False)[:, 0]


def _check_finite(path, tensors: dict[str, torch.Tensor]) -> None:
    """BundleError naming the file and the first floating tensor with a NaN or infinite value."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            what = "NaN" if bool(torch.isnan(t).any()) else "infinite"
            raise BundleError(f"{path}: tensor {name!r} holds {what} values; a detector's weights "
                              "must be finite (corrupted file, or a diverged training run?)")


def _check_backend(backend, device: torch.device) -> str | None:
    """``backend`` (None, or a name of BACKENDS, any case) checked for every method alike:
    TypeError for a non-str, ValueError listing the known backends for an unknown name,
    BackendUnavailableError for one that cannot run on ``device`` here."""
    if backend is None:
        return None
    if not isinstance(backend, str):
        raise TypeError(f"detect: backend must be a str or None, got {type(backend).__name__}")
    check_choice("detect", "backend", backend.lower(), BACKENDS)
    return resolve_backend(backend, device, "detect")


def _finite_scores(result: DetectionResult) -> torch.Tensor:
    """The scores of ``result``; ValueError naming the first non-finite one (calibration)."""
    bad = result.invalid
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        name = result.names[i] if result.names else f"image {i}"
        raise ValueError(f"calibrate: {int(bad.sum())} of {len(result)} validation scores are not "
                         f"finite (first: {name}, score {float(result.scores[i])}); the detector's "
                         "weights or these images are broken, so no threshold can be set")
    return result.scores


@contextlib.contextmanager
def _progress_bar(show: bool, total: int, desc: str, unit: str):
    """A tqdm bar's ``update`` callable while the block runs (closed after it), or None when
    ``show`` is false."""
    if not show:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit)
    try:
        yield bar.update
    finally:
        bar.close()
