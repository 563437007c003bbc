"""The defect segmenter: per-pixel defect maps learned from synthetic anomalies.

A GAN detector's map is its reconstruction residual |x - G(x)|. On fine textures (grass, brick)
the autoencoder reconstructs the texture's own detail about as badly as a 1-3 px scratch, so the
residual cannot tell them apart (benchmarks/accuracy/RESULTS_ACCURACY.md). The segmenter is a
small U-Net ``h`` trained, on the normal training images only, to find anomalies *planted by a
generic generator* (the discriminative network of DRAEM, Zavrtanik et al. 2021, with anomalies
sourced from the training images themselves instead of an external texture set):

    x~ = x (1 - b m) + b m c          m: a blob mask (a random smooth field above a random
                                        quantile), c: a flipped/transposed crop of another
                                        training image, brightness/contrast-changed, or x
                                        itself shifted in brightness; b in [0.2, 1]; half of
                                        each batch is left clean (m = 0)
    loss = focal(h(u(x~)), m)          per pixel, gamma 2; Adam, lr decayed to 0 along a cosine

with u(x) = [2 x - 1] (``inputs="image"``) or [2 x - 1, 4 r(x)] (``"image+residual"``: r is the
method's map of the same crop, computed by the frozen networks for each synthetic batch, as
DRAEM's discriminator reads the reconstruction). Crops are the model size (a tile detector's
tile). The generator shares no code or shape family with any benchmark's planted defects
(no lines, discs or Gaussian blobs).

At detection the segmenter replaces the method's map at the model size: maps = sigmoid(h(u(x)))
in [0, 1] (tiled images: per tile, then blended as any map), and the image score is the
detector's patch top-n of that map (``ScoringConfig(image_score="patch_topn")``, required).

U-Net: three 2x max-pool levels (width w, 2w, 4w, 4w; two 3x3 conv + BatchNorm + ReLU per
level), bilinear upsampling to the skip's size (any model size >= 8), a 1x1 output convolution.
Memory: about 10 w floats per input pixel of activations at inference.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._validate import check_choice, check_int, check_real, settings_from_any

__all__ = ["SegmenterConfig", "Segmenter", "SegNet", "synthetic_anomalies", "INPUTS"]

INPUTS = ("image", "image+residual")
MAXIMA = {"steps": 1_000_000, "width": 256, "batch_size": 4096}


@dataclass
class SegmenterConfig:
    """steps, batch_size, lr: Adam steps, crops per batch (half get a synthetic anomaly),
    learning rate (decayed to 0 along a cosine over the steps); width: channels of the U-Net's first level; inputs: "image" or
    "image+residual" (see the module doc)."""

    steps: int = 3000
    batch_size: int = 16
    width: int = 16
    lr: float = 1e-3
    inputs: str = "image"

    def __post_init__(self):
        for name in ("steps", "width"):
            check_int("segmenter", name, getattr(self, name), minimum=1, maximum=MAXIMA[name])
        check_int("segmenter", "batch_size", self.batch_size, minimum=2, maximum=MAXIMA["batch_size"])
        self.lr = check_real("segmenter", "lr", self.lr, 0.0, 1.0, lo_open=True)
        check_choice("segmenter", "inputs", self.inputs, INPUTS)

    @classmethod
    def from_any(cls, v) -> "SegmenterConfig | None":
        """None/False: no segmenter; True: the defaults; a dict of settings; a SegmenterConfig."""
        return settings_from_any("segmenter", cls, v)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SegNet(nn.Module):
    """(B, c_in, H, W) network input -> (B, H, W) per-pixel logits (see the module doc)."""

    def __init__(self, c_in: int, width: int = 16):
        super().__init__()
        w = width
        self.e1, self.e2, self.e3, self.e4 = _block(c_in, w), _block(w, 2 * w), _block(2 * w, 4 * w), _block(4 * w, 4 * w)
        self.d3, self.d2, self.d1 = _block(8 * w, 2 * w), _block(4 * w, w), _block(2 * w, w)
        self.out = nn.Conv2d(w, 1, 1)

    @staticmethod
    def _up(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        e1 = self.e1(u)
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        e4 = self.e4(F.max_pool2d(e3, 2))
        d3 = self.d3(torch.cat([self._up(e4, e3), e3], 1))
        d2 = self.d2(torch.cat([self._up(d3, e2), e2], 1))
        d1 = self.d1(torch.cat([self._up(d2, e1), e1], 1))
        return self.out(d1)[:, 0]


def _blob_masks(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 1, size, size) float {0, 1}: a smooth random field (Gaussian noise on a 3..17-point
    grid, bicubic-upsampled, optionally transposed) above its q-quantile, q in [0.93, 0.995]."""
    out = torch.empty(n, 1, size, size)
    for i in range(n):
        cells = 2 ** int(torch.randint(1, 5, (1,), generator=gen))
        field = F.interpolate(torch.randn(1, 1, cells + 1, cells + 1, generator=gen), size=(size, size),
                              mode="bicubic", align_corners=True)
        if torch.rand(1, generator=gen).item() < 0.5:
            field = field.transpose(-1, -2)
        q = 0.93 + 0.065 * torch.rand(1, generator=gen).item()
        out[i] = (field >= torch.quantile(field.flatten(), q)).float()
    return out


def synthetic_anomalies(x: torch.Tensor, pool: torch.Tensor, gen: torch.Generator
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x~, m): ``x`` (B, C, S, S) in [0, 1] with a synthetic anomaly in about half of the
    images (module doc), and the masks (B, S, S) float {0, 1}; ``pool`` (M, C, S, S): the
    crops anomalies take their content from. Seeded by ``gen`` (CPU)."""
    B, C, S, _ = x.shape
    m = _blob_masks(B, S, gen) * (torch.rand(B, 1, 1, 1, generator=gen) < 0.5).float()
    src = pool[torch.randint(pool.shape[0], (B,), generator=gen)].to(torch.float32)
    flip = torch.rand(B, 1, 1, 1, generator=gen) < 0.5
    src = torch.where(flip, src.flip(-1), src.transpose(-1, -2))
    gain = 0.5 + torch.rand(B, 1, 1, 1, generator=gen)            # [0.5, 1.5]
    shift = 0.6 * torch.rand(B, 1, 1, 1, generator=gen) - 0.3     # [-0.3, 0.3]
    own = torch.rand(B, 1, 1, 1, generator=gen) < 0.5
    content = torch.where(own, x + shift.sign() * shift.abs().clamp(min=0.05), gain * src + shift)
    beta = 0.2 + 0.8 * torch.rand(B, 1, 1, 1, generator=gen)
    m, content, beta = m.to(x.device), content.to(x.device), beta.to(x.device)
    return (x * (1 - beta * m) + beta * m * content).clamp(0, 1), m[:, 0]


def net_input(x: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
    """[2 x - 1] or [2 x - 1, 4 clamp(r, 0, 1)]: (B, C or C + 1, S, S) float32."""
    u = x.to(torch.float32) * 2 - 1
    if maps is None:
        return u
    return torch.cat([u, 4 * maps.to(u.device, torch.float32).clamp(0, 1)[:, None]], 1)


class Segmenter:
    """The trained network and its config (see the module doc)."""

    def __init__(self, config: SegmenterConfig, net: SegNet, channels: int):
        self.config, self.channels = config, int(channels)
        self.net = net.eval().requires_grad_(False)

    def to(self, device) -> "Segmenter":
        self.net = self.net.to(device)
        return self

    @property
    def uses_residual(self) -> bool:
        return self.config.inputs == "image+residual"

    @classmethod
    def fit(cls, crops: Callable[[int], torch.Tensor], residual: Callable[[torch.Tensor], torch.Tensor] | None,
            config: SegmenterConfig, channels: int, *, seed: int = 0, device=None,
            progress: Callable[[int], None] | None = None,
            anomalies: Callable[[torch.Tensor, torch.Tensor, torch.Generator],
                                tuple[torch.Tensor, torch.Tensor]] = synthetic_anomalies) -> "Segmenter":
        """Train on synthetic anomalies. ``crops(n)``: n random normal training crops (n, C, S,
        S) in [0, 1] (the model size); ``residual(x)``: the method's maps (n, S, S) of crops
        (needed for ``inputs="image+residual"``); ``progress(step)`` after each step;
        ``anomalies(x, pool, gen) -> (x~, masks (n, S, S) float)``: what is planted, the
        module's generator unless a study replaces it (benchmarks/accuracy/surfaces_ceiling.py
        plants a benchmark's own defects there)."""
        if (residual is None) == (config.inputs == "image+residual"):
            raise ValueError(f"Segmenter.fit: inputs={config.inputs!r} "
                             f"{'needs' if residual is None else 'takes no'} residual function")
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = SegNet(channels + (1 if residual is not None else 0), config.width)
        net = net.to(device) if device is not None else net
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        # cosine decay to 0: a fixed step count without validation must end at a settled
        # network (at a constant lr the last step's network varied by 10+ points of pixel AUROC)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, config.steps) / config.steps)))
        net.train()
        for step in range(config.steps):
            x = crops(config.batch_size)
            pool = crops(config.batch_size)
            flip = (torch.rand(x.shape[0], 2, generator=gen) < 0.5).to(x.device)
            x = torch.where(flip[:, 0, None, None, None], x.flip(-1), x)
            x = torch.where(flip[:, 1, None, None, None], x.flip(-2), x)
            xs, m = anomalies(x, pool, gen)
            with torch.no_grad():
                r = residual(xs) if residual is not None else None
            logits = net(net_input(xs, r))
            p = torch.sigmoid(logits)
            bce = F.binary_cross_entropy_with_logits(logits, m, reduction="none")
            pt = torch.where(m > 0, p, 1 - p)
            loss = ((1 - pt) ** 2 * bce).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress is not None:
                progress(step + 1)
        return cls(config, net.eval(), channels)

    @torch.no_grad()
    def maps(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """(B, C, S, S) images in [0, 1] (and the method's maps (B, S, S)) -> (B, S, S) float32
        defect probabilities."""
        net = self.net.to(x.device)
        return torch.sigmoid(net(net_input(x, residual if self.uses_residual else None))).float()

    # ---- file -------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(meta, tensors) for the detector file (tensors under ``segmenter.``)."""
        tensors = {f"segmenter.{k}": v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        return {"config": self.config.to_dict(), "channels": self.channels}, tensors

    @classmethod
    def from_state(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> "Segmenter":
        config = SegmenterConfig.from_any(dict(meta["config"]))
        channels = int(meta["channels"])
        net = SegNet(channels + (1 if config.inputs == "image+residual" else 0), config.width)
        prefix = "segmenter."
        net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                            strict=True)
        return cls(config, net, channels)
