"""The feature score: what a frozen ImageNet backbone says about an image, fused with the
detector's own image score.

A GAN trained on a thousand cells learns their look from scratch; a backbone trained on
ImageNet already separates texture, edges and shapes, and on real parts (ELPV solar cells) its
features tell defects from normals far better than the GAN's residual does
(benchmarks/accuracy/RESULTS_ACCURACY.md). Two terms, computed on images resized to
``size`` x ``size`` (:mod:`anomgan.features`; grey images repeated over three channels):

    f(x)   the image feature: global means of the backbone's stride-8, -16, -32 and head
           activations (1752 values)
    P(x)   the patch features: the stride-16 activations (112 channels), each averaged over its
           3 x 3 neighbourhood

    logistic term   l(x) = w_lr . (f(x) - m) / s + b      (labelled defects given)
        L2-regularised logistic regression (inverse strength ``C``, classes weighted to count
        alike) of the training normals (0) against the labelled defects (1), on features
        standardised by the training set's mean m and std s
    patch term      p(x) = max over positions u of  min over b in B of ||P(x)_u - b||_2
        B: ``bank`` patch features drawn (seeded, without replacement) from all positions of
        the training normals, kept in float16 (PatchCore's nearest-neighbour score, with a
        random memory bank; searched exactly, with pruning: :mod:`anomgan.scoring.nearest_bank`)

Fusion, as the defect head's (:mod:`anomgan.scoring.defect_head`): with mu, sd over the normal
images the fusion is fitted on (the validation normals in :func:`anomgan.train`),

    score(x) = (s(x) - mu_s) / sd_s + w [ (l(x) - mu_l) / sd_l + (p(x) - mu_p) / sd_p ]

where s is the detector's image score (with its defect head, if any) and w the ``weight``. A
term is absent when it has nothing to learn from (no labelled defects; ``bank`` 0). Maps are
not changed. Cost a scored image (2 CPU cores, 224 px, the default bank): the backbone
(~0.4 GFLOP, ~22 ms) and the bank search (at most positions x bank x 112 multiply-adds, 0.9
GFLOP; the pruned search reads most of the bank for a few positions only: ~6 ms).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .._validate import check_choice, check_int, check_real, settings_from_any
from .nearest_bank import max_nearest_distance

__all__ = ["FeatureScoreConfig", "FeatureScore", "features"]

TERMS = ("logistic", "patch")


@dataclass
class FeatureScoreConfig:
    """backbone: the pretrained network (:data:`anomgan.features.BACKBONES`); size: the side
    (pixels) images are resized to for it; C: inverse L2 strength of the logistic term; bank:
    patch features kept from the training normals for the patch term (0: no patch term);
    weight: w, each term's weight in the fused score; batch_size: images a backbone call."""

    backbone: str = "efficientnet-lite0"
    size: int = 224
    C: float = 0.001
    bank: int = 40000
    weight: float = 1.0
    batch_size: int = 32

    def __post_init__(self):
        from ..features import BACKBONES

        check_choice("features", "backbone", self.backbone, sorted(BACKBONES))
        check_int("features", "size", self.size, minimum=32, maximum=1024)
        self.C = check_real("features", "C", self.C, 0.0, 1e6, lo_open=True)
        check_int("features", "bank", self.bank, minimum=0, maximum=2_000_000)
        self.weight = check_real("features", "weight", self.weight, 0.0, 1000.0)
        check_int("features", "batch_size", self.batch_size, minimum=1, maximum=4096)

    @classmethod
    def from_any(cls, v) -> "FeatureScoreConfig | None":
        """None/False: none; True: the defaults; a dict of settings; a FeatureScoreConfig."""
        return settings_from_any("features", cls, v)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def features(config: FeatureScoreConfig, images: torch.Tensor, progress=None,
             device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) in [0, 1] -> (image features (N, 1752), patch features
    (N, h * w, 112)) float32 on ``device`` (the backbone runs there; None: the CPU),
    ``config.batch_size`` images a backbone call; ``progress(k)`` is called with the number of
    images of each call."""
    from ..data.ingest import resize
    from ..features import backbone, feature_maps

    device = torch.device("cpu" if device is None else device)
    net = backbone(config.backbone, device=device)
    glob, patches = [], []
    for i in range(0, images.shape[0], config.batch_size):
        x = resize(images[i:i + config.batch_size].detach().to(device).float(), (config.size, config.size))
        g, p = feature_maps(net, x)
        glob.append(g)
        patches.append(p.flatten(2).transpose(1, 2))
        if progress is not None:
            progress(x.shape[0])
    if not glob:
        return torch.zeros(0, 1, device=device), torch.zeros(0, 1, 1, device=device)
    return torch.cat(glob), torch.cat(patches)


class FeatureScore:
    """The fitted terms, their config and the fusion statistics (module doc)."""

    def __init__(self, config: FeatureScoreConfig, *, logistic: dict[str, torch.Tensor] | None,
                 bank: torch.Tensor | None, fusion: dict[str, float] | None = None):
        from ..features import IMAGE_DIM, PATCH_DIM

        if logistic is None and bank is None:
            raise ValueError("FeatureScore: neither a logistic nor a patch term")
        if logistic is not None:
            dims = {k: tuple(v.shape) for k, v in logistic.items()}
            d = IMAGE_DIM
            if dims != {"mean": (d,), "scale": (d,), "coef": (d,), "intercept": (1,)}:
                raise ValueError(f"FeatureScore: logistic term tensors of shapes {dims}, expected "
                                 f"mean, scale, coef ({d},) and intercept (1,)")
        if bank is not None and (bank.dim() != 2 or bank.shape[0] < 1 or bank.shape[1] != PATCH_DIM):
            raise ValueError(f"FeatureScore: bank must be (B >= 1, {PATCH_DIM}), got {tuple(bank.shape)}")
        self.config = config
        self.logistic = logistic
        self.bank = bank
        self._bank32: dict[str, torch.Tensor] = {}  # the bank in float32, a device
        self.fusion = None if fusion is None else self._check_fusion(fusion)

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(t for t, v in zip(TERMS, (self.logistic, self.bank)) if v is not None)

    def _check_fusion(self, f: dict) -> dict[str, float]:
        out = {}
        for k in ("score", *self.terms):
            for stat in ("mean", "std"):
                key = f"{k}_{stat}"
                if key not in f:
                    raise ValueError(f"FeatureScore: fusion statistics lack {key!r}")
                out[key] = (check_real("FeatureScore", key, f[key], 0.0, lo_open=True) if stat == "std"
                            else check_real("FeatureScore", key, f[key]))
        return out

    # ---- training ---------------------------------------------------------------------------
    @classmethod
    def fit(cls, normal: torch.Tensor, defects: torch.Tensor | None, config: FeatureScoreConfig,
            *, seed: int = 0, progress=None, device: torch.device | str | None = None) -> "FeatureScore":
        """Fit the terms on training normals (N, C, H, W) and labelled defects (or None) in
        [0, 1] (module doc); the fusion statistics come after (:meth:`fit_fusion`).
        ``progress(k)``: called with the number of images each backbone call read; ``device``:
        where the backbone runs (None: the CPU); the fitted terms are kept on the CPU."""
        for name, t in (("normal", normal), ("defects", defects)):
            if t is None:
                continue
            if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[1] not in (1, 3):
                raise ValueError(f"FeatureScore.fit: {name} must be (N, 1 or 3, H, W) images, got "
                                 f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
            if t.shape[0] < 1:
                raise ValueError(f"FeatureScore.fit: no {name} images")
        if defects is None and config.bank == 0:
            raise ValueError("FeatureScore.fit: with no labelled defects and bank=0 there is no "
                             "term to fit: give defects or a bank > 0")
        fn, pn = (t.cpu() for t in features(config, normal, progress, device))
        logistic = None
        if defects is not None:
            fd = features(config, defects, progress, device)[0].cpu()
            logistic = _fit_logistic(fn, fd, config.C)
        bank = None
        if config.bank > 0:
            flat = pn.reshape(-1, pn.shape[-1])
            gen = torch.Generator().manual_seed(seed + 104729)
            keep = torch.randperm(flat.shape[0], generator=gen)[:config.bank]
            bank = flat[keep.sort().values].half().contiguous()  # as the file keeps it
        return cls(config, logistic=logistic, bank=bank)

    def fit_fusion(self, scores: torch.Tensor, images: torch.Tensor,
                   device: torch.device | str | None = None) -> dict[str, float]:
        """Fusion statistics from the detector scores (N,) and the images (N, C, H, W) of
        N >= 2 normal images the terms were not fitted on (the terms run on ``device``)."""
        if scores.dim() != 1 or scores.shape[0] < 2 or images.shape[0] != scores.shape[0]:
            raise ValueError(f"FeatureScore.fit_fusion: needs N >= 2 scores (N,) and N images, got "
                             f"{tuple(scores.shape)} and {tuple(images.shape)}")
        values = {"score": scores.double().cpu(),
                  **{k: v.double() for k, v in self.term_values(images, device).items()}}
        stats = {}
        for k, v in values.items():
            if not torch.isfinite(v).all():
                raise ValueError(f"FeatureScore.fit_fusion: a {k} value of the normal images is not finite")
            stats[f"{k}_mean"], stats[f"{k}_std"] = float(v.mean()), max(float(v.std()), 1e-12)
        self.fusion = self._check_fusion(stats)
        return self.fusion

    # ---- scoring ----------------------------------------------------------------------------
    def term_values(self, images: torch.Tensor, device: torch.device | str | None = None
                    ) -> dict[str, torch.Tensor]:
        """{term: (N,) float32 on the CPU} of images (N, C, H, W) in [0, 1] (module doc); the
        backbone and the bank search run on ``device`` (None: the CPU)."""
        glob, patches = features(self.config, images, device=device)
        out = {}
        if self.logistic is not None:
            lg = {k: v.to(glob.device) for k, v in self.logistic.items()}
            out["logistic"] = (((glob - lg["mean"]) / lg["scale"]) @ lg["coef"] + lg["intercept"]).cpu()
        if self.bank is not None:
            out["patch"] = max_nearest_distance(patches, self._bank_float32(patches.device)).cpu()
        return out

    def _bank_float32(self, device: torch.device) -> torch.Tensor:
        """The bank in float32 on ``device`` (converted once a device; the file keeps float16
        on the CPU)."""
        key = str(device)
        if key not in self._bank32:
            self._bank32[key] = self.bank.to(device).float().contiguous()
        return self._bank32[key]

    def fuse(self, scores: torch.Tensor, images: torch.Tensor,
             device: torch.device | str | None = None) -> torch.Tensor:
        """The fused image score (N,) float32, on the scores' device, of detector scores (N,) and
        their images; the terms are computed on ``device`` (None: the CPU)."""
        if self.fusion is None:
            raise RuntimeError("FeatureScore: no fusion statistics yet (fit_fusion on normal images)")
        f, w = self.fusion, self.config.weight
        out = (scores.double().cpu() - f["score_mean"]) / f["score_std"]
        for k, v in self.term_values(images, device).items():
            out = out + w * (v.double() - f[f"{k}_mean"]) / f[f"{k}_std"]
        return out.float().to(scores.device)

    # ---- file -------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(meta, tensors) for the detector file (tensors under ``features.``; the backbone's
        weights are not stored: they come from its package, checked by SHA-256)."""
        tensors = {}
        if self.logistic is not None:
            tensors.update({f"features.logistic.{k}": v.contiguous() for k, v in self.logistic.items()})
        if self.bank is not None:
            tensors["features.bank"] = self.bank.half().contiguous()
        return {"config": self.config.to_dict(), "fusion": self.fusion, "terms": list(self.terms)}, tensors

    @classmethod
    def from_state(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "FeatureScore":
        config = FeatureScoreConfig.from_any(dict(meta["config"]))
        terms = list(meta.get("terms", []))
        logistic = ({k: tensors[f"features.logistic.{k}"].float() for k in ("mean", "scale", "coef", "intercept")}
                    if "logistic" in terms else None)
        bank = tensors["features.bank"] if "patch" in terms else None
        return cls(config, logistic=logistic, bank=bank, fusion=meta.get("fusion"))


def _fit_logistic(normal: torch.Tensor, defects: torch.Tensor, C: float) -> dict[str, torch.Tensor]:
    """Standardisation and L2 logistic regression (classes weighted alike) of features (N, D)."""
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([normal, defects]).double().numpy()
    y = np.r_[np.zeros(normal.shape[0]), np.ones(defects.shape[0])]
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit((x - mean) / scale, y)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    return {"mean": t(mean), "scale": t(scale), "coef": t(model.coef_[0]), "intercept": t(model.intercept_)}
