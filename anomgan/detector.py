"""The Detector: the one artifact users keep, and how it scores images.

A Detector holds a trained method (its networks and hyper-parameters), the preprocessing it
expects (image size and channels, images as floats in [0, 1]), the scoring settings and an
optional calibrated threshold. ``det.save(path)`` writes one file (safetensors weights + JSON
metadata with a format version, atomically); ``anomgan.load(path)`` reads it back and refuses
truncated, corrupted, newer-format or foreign files. Nothing is ever unpickled.

Scoring (``det.detect``)
------------------------
* Images at the model size: the method's own score — the latent-search loss for ``anogan`` /
  ``noisy-gan`` (warm-started by the encoder when it was trained), GANomaly's latent distance,
  the reconstruction patch top-n for ``dual-disc`` — unless ``scoring.image_score`` is
  ``"patch_topn"``. Maps are per-pixel residuals |x − reconstruction| (mean over channels).
* Larger images (both sides >= the model size, e.g. 1024×1024 for a 64-pixel model): cut into
  overlapping tiles, the tiles of every image of the batch scored together in chunks of
  ``batch_size`` tiles, the per-tile maps blended back to the input resolution; the image score
  is ``anomgan.ops.patch_topn_l1`` over the stitched map (patch/stride/n of the settings).
* An image's score never depends on the rest of its batch: networks run in eval mode, latent
  searches are per sample with starts that do not depend on the batch, and nothing is
  normalised by batch or test-set statistics.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from . import __version__
from .fileio import BundleError, load_bundle, save_bundle
from .ops import patch_topn_l1
from .preprocess import to_batch
from .result import DetectionResult
from .thresholds import Threshold, from_labelled_f1, from_normal_fpr, from_normal_quantile
from .tiling import tiled_apply

FORMAT_VERSION = 1
KIND = "detector"
SEARCH_METHODS = ("anogan", "noisy-gan")


@dataclass
class ScoringConfig:
    """How a detector scores. Stored in the detector file.

    search_steps, search_lam, search_restarts, search_seed, search_reduction:
        latent search of the GAN methods (anogan, noisy-gan): Adam steps (AnoGAN's schedule,
        scaled to the step count), λ of the feature-matching term, starts per image (restart 0
        from the encoder when there is one), seed of the fixed extra starts, "mean" or "sum".
    image_score: "native" (the method's own score at model size) or "patch_topn" (the
        patch top-n over the per-pixel map, as for tiled images).
    patch, stride, n: the patch top-n image score over maps (tiled images, "patch_topn").
    tile_overlap: pixels of overlap between tiles (None: a quarter of the tile).
    batch_size: images (or tiles) scored per network call.
    """

    search_steps: int = 500
    search_lam: float = 0.1
    search_restarts: int = 1
    search_seed: int = 0
    search_reduction: str = "mean"
    image_score: str = "native"
    patch: int = 16
    stride: int = 8
    n: int = 3
    tile_overlap: int | None = None
    batch_size: int = 64

    def __post_init__(self):
        for name in ("search_steps", "search_restarts", "patch", "stride", "n", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ScoringConfig: {name} must be an int >= 1, got {v!r}")
        if not isinstance(self.search_lam, (int, float)) or not 0.0 <= self.search_lam <= 1.0:
            raise ValueError(f"ScoringConfig: search_lam must be in [0, 1], got {self.search_lam!r}")
        if self.search_reduction not in ("mean", "sum"):
            raise ValueError(f"ScoringConfig: search_reduction must be 'mean' or 'sum', got "
                             f"{self.search_reduction!r}")
        if self.image_score not in ("native", "patch_topn"):
            raise ValueError(f"ScoringConfig: image_score must be 'native' or 'patch_topn', got "
                             f"{self.image_score!r}")
        if self.tile_overlap is not None and (not isinstance(self.tile_overlap, int) or self.tile_overlap < 0):
            raise ValueError(f"ScoringConfig: tile_overlap must be None or an int >= 0, got "
                             f"{self.tile_overlap!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScoringConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ScoringConfig: unknown setting(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


class Detector:
    """A trained method plus everything needed to score images with it (see the module doc)."""

    def __init__(self, method, *, scoring: ScoringConfig | dict | None = None,
                 threshold: Threshold | None = None, info: dict[str, Any] | None = None):
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
        self._frozen = None  # (generator, discriminator) inference copies for latent search

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

    @property
    def uses_encoder(self) -> bool:
        """Whether latent searches start from the trained encoder's E(x) (f-AnoGAN warm start)."""
        return hasattr(self.method, "encoder") and bool(getattr(self.method, "encoder_trained", False))

    def describe(self) -> dict[str, Any]:
        """Flat, human-readable settings (for reports and the CLI)."""
        d = {"method": self.method_name, "image size": self.image_size, "channels": self.channels}
        d.update({f"hp.{k}": v for k, v in self.method.hp.items()})
        d.update({f"scoring.{k}": v for k, v in self.scoring.to_dict().items()})
        d["threshold"] = "none" if self.threshold is None else (
            f"{self.threshold.value:.6g} ({self.threshold.rule} {self.threshold.params})")
        d.update({f"info.{k}": v for k, v in self.info.items()})
        return d

    def __repr__(self) -> str:
        thr = None if self.threshold is None else round(self.threshold.value, 6)
        return (f"Detector(method={self.method_name!r}, image_size={self.image_size}, "
                f"channels={self.channels}, threshold={thr})")

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
            "anomgan_version": __version__,
        }
        save_bundle(path, {f"method.{k}": v for k, v in state.items()}, meta, kind=KIND,
                    format_version=FORMAT_VERSION)

    @classmethod
    def load(cls, path, *, device: str | torch.device = "cpu") -> "Detector":
        """Read a detector written by :meth:`save`; raises BundleError on a bad file."""
        from .models import get_method

        tensors, meta, _ = load_bundle(path, kind=KIND, max_format_version=FORMAT_VERSION)
        try:
            method = get_method(meta["method"]).from_stored(meta["hparams"])
            state = {k[len("method."):]: v for k, v in tensors.items() if k.startswith("method.")}
            method.load_state_dict(state, strict=True)
            thr = meta.get("threshold")
            det = cls(method.to(device), scoring=ScoringConfig.from_dict(meta["scoring"]),
                      threshold=None if thr is None else Threshold.from_dict(thr),
                      info=meta.get("info") or {})
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise BundleError(f"{path}: a detector file whose contents do not fit together "
                              f"(corrupted or edited? {type(exc).__name__}: {exc})") from None
        return det

    # ---- scoring ----------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.method.parameters()).device

    def _search_scores(self, x: torch.Tensor, backend: str | None):
        """Latent-search loss and per-pixel residual of model-size images x (N, C, s, s)."""
        from .search import ANOGAN_LR_SCHEDULE, latent_search

        m, cfg = self.method, self.scoring
        if self._frozen is None:  # inference copies (BatchNorm folded), made once per detector
            from .frozen import prepare_frozen

            self._frozen = (prepare_frozen(m.generator), prepare_frozen(m.discriminator))
        frozen_g, frozen_d = self._frozen
        xm = m.to_model(x)
        gen = torch.Generator().manual_seed(cfg.search_seed)
        fixed = torch.randn(cfg.search_restarts, m.z_dim, generator=gen).to(xm)
        z0 = fixed.unsqueeze(0).expand(x.shape[0], -1, -1).clone()
        if self.uses_encoder:
            with torch.no_grad():
                z0[:, 0] = m.encoder(xm).reshape(x.shape[0], -1)
        # AnoGAN's schedule, its step boundaries scaled to the configured step count
        scale = cfg.search_steps / 500.0
        by_step = {int(round(s * scale)): v for s, v in ANOGAN_LR_SCHEDULE}  # later wins a tie
        lr = tuple(sorted(by_step.items()))
        res = latent_search(frozen_g, frozen_d.features, xm, steps=cfg.search_steps,
                            lr=lr, lam=cfg.search_lam, z0=z0, restarts=cfg.search_restarts,
                            reduction=cfg.search_reduction, backend=backend)
        recon = m.to_image(res.recon.detach())
        maps = (x - recon.to(x)).abs().mean(dim=1)
        return res.loss.detach().float(), maps.float()

    def score_model_size(self, x: torch.Tensor, backend: str | None = None):
        """(scores (N,), maps (N, s, s)) of images already at the model size, in [0, 1]."""
        if self.method_name in SEARCH_METHODS:
            return self._search_scores(x, backend)
        with torch.inference_mode():
            scores, maps = self.method.score(x)
        return scores.float().clone(), maps.float().clone()

    def _map_scores(self, maps: torch.Tensor, backend: str | None) -> torch.Tensor:
        cfg = self.scoring
        H, W = maps.shape[-2:]
        patch = min(cfg.patch, H, W)
        stride = min(cfg.stride, patch)
        windows = ((H - patch) // stride + 1) * ((W - patch) // stride + 1)
        e = maps.unsqueeze(1).contiguous()
        scores, _ = patch_topn_l1(e, torch.zeros_like(e), patch=patch, stride=stride,
                                  n=min(cfg.n, windows), backend=backend)
        return scores.float()

    def score_tensor(self, x: torch.Tensor, *, backend: str | None = None,
                     batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (B,), maps (B, H, W)) of a float (B, C, H, W) tensor in [0, 1] with
        C == channels and H, W >= image_size."""
        s, cfg = self.image_size, self.scoring
        bs = batch_size or cfg.batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ValueError(f"detect: batch_size must be an int >= 1, got {batch_size!r}")
        B, C, H, W = x.shape
        if C != self.channels:
            raise ValueError(f"detect: images have {C} channels, the detector expects {self.channels}")
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
        """Score a batch (see :func:`anomgan.preprocess.to_batch` for what is accepted)."""
        import os

        if names is None and isinstance(batch, (list, tuple)) and batch and all(
                isinstance(b, (str, os.PathLike)) for b in batch):
            names = [os.fspath(b) for b in batch]
        x = to_batch(batch, channels=self.channels)
        scores, maps = self.score_tensor(x, backend=backend, batch_size=batch_size)
        scores, maps = scores.cpu(), maps.cpu()
        if self.threshold is None:
            labels = torch.zeros(scores.shape[0], dtype=torch.bool)
            thr = None
        else:
            labels = self.threshold.classify(scores)
            thr = self.threshold.value
        return DetectionResult(scores=scores, maps=maps, labels=labels, threshold=thr, names=names)

    # ---- calibration ------------------------------------------------------------------------
    def calibrate(self, normal=None, *, images=None, labels=None, fpr: float | None = None,
                  quantile: float | None = None, backend: str | None = None) -> Threshold:
        """Set and return the threshold.

        From normal validation images only: ``calibrate(normal, fpr=0.05)`` (the threshold that
        flags at most that fraction of them) or ``calibrate(normal, quantile=0.99)``.
        From labelled images: ``calibrate(images=..., labels=...)`` (the F1-optimal threshold).
        """
        if normal is not None:
            if images is not None or labels is not None:
                raise ValueError("calibrate: give normal images, or images with labels, not both")
            if (fpr is None) == (quantile is None):
                raise ValueError("calibrate: with normal images give exactly one of fpr= or quantile=")
            scores = self.detect(normal, backend=backend).scores
            thr = from_normal_fpr(scores, fpr) if fpr is not None else from_normal_quantile(scores, quantile)
        else:
            if images is None or labels is None:
                raise ValueError("calibrate: give normal images (with fpr= or quantile=), or "
                                 "images= with labels=")
            scores = self.detect(images, backend=backend).scores
            thr = from_labelled_f1(labels, scores)
        self.threshold = thr
        return thr
