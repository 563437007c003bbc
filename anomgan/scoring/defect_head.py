"""The defect head: what the labelled defects teach the detector's image score.

A GAN detector's image score is a fixed statistic of its residual map (the patch top-n of
|x - G(x)|). Which residuals mean "defect" and which are a busbar, a rounded corner or the
grain of a poly cell, the labelled defects can tell; a fixed statistic cannot learn it. The
defect head is an ensemble of ``members`` small CNNs, each trained to tell the training normals
from the labelled defects, given two channels at ``size`` x ``size``:

    u = [2 x - 1,  4 r]        x: the image (grey: the channel mean), r: the detector's map,
                               both area-resized to size x size (r clamped to [0, 1] first)

Each member is four stride-2 3x3 convolutions (width w, 2w, 4w, 8w; BatchNorm, ReLU), a 1x1
convolution to one logit per position, and the mean over positions; the head's logit l(x) is
the members' mean. Training: ``steps`` Adam steps (lr ``lr``) of binary cross-entropy on
batches of ``batch_size`` that are half normal, half defective, each image flipped left-right
and up-down at random; a fixed step count (no labelled validation defects are needed).

Defect pasting (``paste`` = b > 0): a labelled defect is one example of a defect in one cell's
context; pasting it into other normals multiplies the contexts. Each labelled defect's box is
the b x b window (of the size x size input) centred on the largest 9 x 9 mean of its map
channel, clipped to the image: where the detector saw the defect. A fraction ``paste_fraction``
of each batch's defective half is replaced by pasted defects: a random training normal whose
box region (both channels) is replaced by a random labelled defect's box, at the same place
(aligned parts keep their layout), the image channel shifted by the difference of the two
images' means (the patch takes the host's brightness, not its own cell's).

The detector's image score s(x) and the head's logit l(x) are then fused as

    score(x) = (s(x) - mu_s) / sd_s + w (l(x) - mu_l) / sd_l

with mu, sd the mean and standard deviation over the normal images the fusion is fitted on
(the validation normals in :func:`anomgan.train`: out of sample for both parts) and w the
head's ``weight`` (1: the two parts count alike; larger: the head dominates). Maps are not
changed: the head moves only the image score.

Measured on ELPV solar cells (validation, 3 splits): benchmarks/accuracy/RESULTS_ACCURACY.md.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._validate import check_int, check_real, settings_from_any

__all__ = ["DefectHeadConfig", "DefectHead", "HeadEnsemble", "HeadNet", "defect_boxes",
           "head_inputs", "paste_defects"]

#: upper limits of the head's int settings (a typo must not ask for hours or gigabytes)
MAXIMA = {"members": 32, "size": 1024, "steps": 1_000_000, "width": 256, "batch_size": 4096}


@dataclass
class DefectHeadConfig:
    """members: CNNs in the ensemble; size: the side (pixels) images and maps are resized to;
    steps, batch_size, lr: Adam steps of each member, images per batch (half defective), learning
    rate; width: channels of the first convolution (then 2x, 4x, 8x); paste: side (pixels of the
    size x size input) of the defect boxes pasted into normals, 0 = no pasting; paste_fraction:
    the share of each batch's defects that are pasted ones; weight: the head's weight w >= 0 in
    the fused score (module doc)."""

    members: int = 3
    size: int = 128
    steps: int = 1000
    width: int = 16
    batch_size: int = 32
    lr: float = 1e-3
    paste: int = 0
    paste_fraction: float = 0.5
    weight: float = 1.0

    def __post_init__(self):
        for name in ("members", "steps", "width"):
            check_int("defect_head", name, getattr(self, name), minimum=1, maximum=MAXIMA[name])
        check_int("defect_head", "size", self.size, minimum=16, maximum=MAXIMA["size"])
        check_int("defect_head", "batch_size", self.batch_size, minimum=2, maximum=MAXIMA["batch_size"])
        self.lr = check_real("defect_head", "lr", self.lr, 0.0, 1.0, lo_open=True)
        check_int("defect_head", "paste", self.paste, minimum=0, maximum=self.size)
        self.paste_fraction = check_real("defect_head", "paste_fraction", self.paste_fraction, 0.0, 1.0)
        self.weight = check_real("defect_head", "weight", self.weight, 0.0, 1000.0)

    @classmethod
    def from_any(cls, v) -> "DefectHeadConfig | None":
        """None/False: no head; True: the defaults; a dict of settings; a DefectHeadConfig."""
        return settings_from_any("defect_head", cls, v)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HeadNet(nn.Module):
    """One member: (B, 2, size, size) -> (B,) logits (see the module doc)."""

    def __init__(self, width: int = 16):
        super().__init__()
        layers, c = [], 2
        for w in (width, 2 * width, 4 * width, 8 * width):
            layers += [nn.Conv2d(c, w, 3, 2, 1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.logit = nn.Conv2d(c, 1, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.logit(self.features(u)).flatten(1).mean(1)


class HeadEnsemble(nn.Module):
    """The members: (B, 2, size, size) -> (B,) their mean logit (what detect and the exported
    head file compute)."""

    def __init__(self, nets):
        super().__init__()
        self.members = nn.ModuleList(nets)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.stack([n(u) for n in self.members]).mean(0)


def head_inputs(images: torch.Tensor, maps: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) images in [0, 1] and (B, H, W) maps -> (B, 2, size, size) float32 head input
    [2 x - 1, 4 clamp(r, 0, 1)] (x: the channel mean), area-resized on the maps' device."""
    if images.dim() != 4 or maps.dim() != 3 or images.shape[0] != maps.shape[0]:
        raise ValueError(f"head_inputs: images (B, C, H, W) and maps (B, H, W) with one B, got "
                         f"{tuple(images.shape)} and {tuple(maps.shape)}")
    x = images.to(maps.device, torch.float32).mean(1, keepdim=True)
    r = maps.float().clamp(0, 1)[:, None]
    x = F.interpolate(x, size=(size, size), mode="area") if x.shape[-2:] != (size, size) else x
    r = F.interpolate(r, size=(size, size), mode="area") if r.shape[-2:] != (size, size) else r
    return torch.cat([x * 2 - 1, r * 4], 1)


def defect_boxes(defects: torch.Tensor, side: int) -> torch.Tensor:
    """(N, 2) int64 top-left corners (row, column) of the side x side boxes of head inputs
    ``defects`` (N, 2, S, S): centred on the largest 9 x 9 mean of the map channel (the first
    such position in row-major order on ties), clipped to the image."""
    r = F.avg_pool2d(defects[:, 1:2].float(), 9, 1, 4, count_include_pad=True)[:, 0]
    s = defects.shape[-1]
    idx = r.flatten(1).argmax(1)
    centre = torch.stack([idx // s, idx % s], 1)
    return (centre - side // 2).clamp(0, s - side).cpu()


def paste_defects(hosts: torch.Tensor, sources: torch.Tensor, corners: torch.Tensor,
                  side: int) -> torch.Tensor:
    """Head inputs (K, 2, S, S): ``hosts`` (K, 2, S, S) with the side x side box of ``sources``
    (K, 2, S, S) at ``corners`` (K, 2) pasted in at the same place, its image channel shifted
    by host mean - source mean (module doc). Inputs are not modified."""
    s = hosts.shape[-1]
    grid = torch.arange(s, device=hosts.device)
    a, b = (corners.to(hosts.device)[:, k, None] for k in (0, 1))
    inside = (((grid >= a) & (grid < a + side))[:, :, None]
              & ((grid >= b) & (grid < b + side))[:, None, :])               # (K, S, S)
    shifted = sources.clone()
    shifted[:, 0] += (hosts[:, 0].mean((1, 2)) - sources[:, 0].mean((1, 2)))[:, None, None]
    return torch.where(inside[:, None], shifted, hosts)


def _with_pasted(bad: torch.Tensor, normal: torch.Tensor, defects: torch.Tensor,
                 corners: torch.Tensor, config: DefectHeadConfig, gen: torch.Generator) -> torch.Tensor:
    """A batch's defective half ``bad`` (a fresh gather: filled in place) with a random
    ``paste_fraction`` of it replaced by defects pasted into random normals
    (:func:`paste_defects`)."""
    use = torch.rand(bad.shape[0], generator=gen) < config.paste_fraction
    k = int(use.sum())
    if k:
        hosts = torch.randint(normal.shape[0], (k,), generator=gen)
        sources = torch.randint(defects.shape[0], (k,), generator=gen)
        bad[use.to(bad.device)] = paste_defects(normal[hosts], defects[sources], corners[sources],
                                                config.paste)
    return bad


class DefectHead:
    """The trained ensemble, its config and the fusion statistics (see the module doc)."""

    def __init__(self, config: DefectHeadConfig, nets: list[HeadNet],
                 fusion: dict[str, float] | None = None):
        if len(nets) != config.members:
            raise ValueError(f"DefectHead: {len(nets)} networks for members={config.members}")
        self.config, self.ensemble = config, HeadEnsemble(nets).eval()
        self.fusion = None if fusion is None else self._check_fusion(fusion)

    @property
    def nets(self) -> nn.ModuleList:
        return self.ensemble.members

    @staticmethod
    def _check_fusion(f: dict) -> dict[str, float]:
        out = {}
        for k in ("score_mean", "score_std", "logit_mean", "logit_std"):
            if k not in f:
                raise ValueError(f"DefectHead: fusion statistics lack {k!r}")
            out[k] = check_real("DefectHead", k, f[k], 0.0, lo_open=True) if k.endswith("std") \
                else check_real("DefectHead", k, f[k])
        return out

    # ---- training ---------------------------------------------------------------------------
    @classmethod
    def fit(cls, normal: torch.Tensor, defects: torch.Tensor, config: DefectHeadConfig, *,
            seed: int = 0, progress=None) -> "DefectHead":
        """Train the members on head inputs (:func:`head_inputs`) of normal (label 0) and
        defective (label 1) images; ``progress(member, step)`` is called after each step."""
        for name, t in (("normal", normal), ("defects", defects)):
            if t.dim() != 4 or t.shape[1:] != (2, config.size, config.size):
                raise ValueError(f"DefectHead.fit: {name} must be (N, 2, {config.size}, "
                                 f"{config.size}) head inputs, got {tuple(t.shape)}")
            if t.shape[0] < 1:
                raise ValueError(f"DefectHead.fit: no {name} images")
        nets = []
        half = config.batch_size // 2
        corners = defect_boxes(defects, config.paste) if config.paste else None
        target = torch.cat([torch.zeros(half), torch.ones(half)]).to(normal.device)
        for m in range(config.members):
            gen = torch.Generator().manual_seed(seed * 1000 + m)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1000 + m)
                net = HeadNet(config.width).to(normal.device)
            opt = torch.optim.Adam(net.parameters(), lr=config.lr)
            net.train()
            for step in range(config.steps):
                ia = torch.randint(normal.shape[0], (half,), generator=gen)
                ib = torch.randint(defects.shape[0], (half,), generator=gen)
                bad = defects[ib]
                if corners is not None:
                    bad = _with_pasted(bad, normal, defects, corners, config, gen)
                u = torch.cat([normal[ia], bad])
                flip = (torch.rand(2 * half, 2, generator=gen) < 0.5).to(u.device)
                u = torch.where(flip[:, 0, None, None, None], u.flip(-1), u)
                u = torch.where(flip[:, 1, None, None, None], u.flip(-2), u)
                loss = F.binary_cross_entropy_with_logits(net(u), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if progress is not None:
                    progress(m, step + 1)
            nets.append(net.eval())
        return cls(config, nets)

    @torch.no_grad()
    def logits(self, u: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(B, 2, size, size) head inputs -> (B,) float32: the members' mean logit."""
        ensemble = self.ensemble.to(u.device)
        out = [ensemble(u[i:i + batch_size]) for i in range(0, u.shape[0], batch_size)]
        return torch.cat(out).float() if out else torch.zeros(0)

    def fit_fusion(self, scores: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
        """Fusion statistics from the detector scores and head logits of >= 2 normal images."""
        if scores.shape != logits.shape or scores.dim() != 1 or scores.shape[0] < 2:
            raise ValueError(f"DefectHead.fit_fusion: needs scores and logits of one shape (N,), "
                             f"N >= 2, got {tuple(scores.shape)} and {tuple(logits.shape)}")
        s, l = scores.double(), logits.double()
        if not (torch.isfinite(s).all() and torch.isfinite(l).all()):
            raise ValueError("DefectHead.fit_fusion: a score or logit of the normal images is not finite")
        eps = 1e-12
        self.fusion = self._check_fusion({
            "score_mean": float(s.mean()), "score_std": max(float(s.std()), eps),
            "logit_mean": float(l.mean()), "logit_std": max(float(l.std()), eps)})
        return self.fusion

    # ---- scoring ----------------------------------------------------------------------------
    def fuse(self, scores: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The fused image score (B,) float32 of detector scores and head logits (B,)."""
        if self.fusion is None:
            raise RuntimeError("DefectHead: no fusion statistics yet (fit_fusion on normal images)")
        f = self.fusion
        logits = logits.to(scores.device)
        return ((scores.double() - f["score_mean"]) / f["score_std"]
                + self.config.weight * (logits.double() - f["logit_mean"]) / f["logit_std"]).float()

    # ---- file -------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(meta, tensors) for the detector file (tensors under ``head.<member>.``)."""
        tensors = {f"head.{m}.{k}": v.detach().cpu().contiguous()
                   for m, n in enumerate(self.nets) for k, v in n.state_dict().items()}
        return {"config": self.config.to_dict(), "fusion": self.fusion}, tensors

    @classmethod
    def from_state(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "DefectHead":
        config = DefectHeadConfig.from_any(dict(meta["config"]))
        nets = []
        for m in range(config.members):
            prefix = f"head.{m}."
            net = HeadNet(config.width)
            net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                 if k.startswith(prefix)}, strict=True)
            nets.append(net)
        return cls(config, nets, meta.get("fusion"))
