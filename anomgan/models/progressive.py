"""Progressive growing (Karras et al. 2018), as Kimura & Yanagihara train the noisy-data GAN.

The networks hold every resolution's layers from the start (so the state_dict layout does not
change while growing and earlier stages' parameters simply carry over); ``set_stage(resolution,
alpha)`` chooses how far they run. While a new resolution r fades in (alpha in [0, 1)):
  generator      out = alpha * to_rgb_r(block_r(h)) + (1 - alpha) * up2(to_rgb_{r/2}(h))
  discriminator  h   = alpha * block_r(from_rgb_r(x)) + (1 - alpha) * from_rgb_{r/2}(pool2(x))
and the method blends real images the same way (``fade_images``). The stage is stored in
buffers, so it travels with the state_dict.

Simplifications against Karras et al. (documented, deliberate): no equalised learning rate and
no minibatch-stddev layer; pixel norm in the generator, no normalisation in the discriminator;
a tanh on the generator output (images in [-1, 1] like the DCGAN generator); He init.
Widths follow :func:`anomgan.models.networks.width_at`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validate import check_int
from .networks import check_net_size, check_width, width_at


class ProgressiveSchedule:
    """Stage of training by step: ``stable_steps`` at ``start_size``; then, for each doubling up
    to ``end_size``, ``fade_steps`` with alpha = (i + 1) / (fade_steps + 1) rising towards 1,
    then ``stable_steps`` at alpha = 1. After ``total_steps``: (end_size, 1.0) for ever."""

    def __init__(self, start_size: int, end_size: int, fade_steps: int, stable_steps: int):
        for k, v in (("start_size", start_size), ("end_size", end_size)):
            if check_int("ProgressiveSchedule", k, v, minimum=4) & (v - 1):
                raise ValueError(f"ProgressiveSchedule: {k} must be a power of two >= 4, got {v!r}")
        if start_size > end_size:
            raise ValueError(f"ProgressiveSchedule: start_size ({start_size}) must be <= "
                             f"end_size ({end_size})")
        for k, v in (("fade_steps", fade_steps), ("stable_steps", stable_steps)):
            check_int("ProgressiveSchedule", k, v, minimum=0)
        self.start_size, self.end_size = start_size, end_size
        self.fade_steps, self.stable_steps = fade_steps, stable_steps
        n = int(math.log2(end_size // start_size))
        self.resolutions = [start_size * 2 ** i for i in range(n + 1)]

    @property
    def total_steps(self) -> int:
        return self.stable_steps + (len(self.resolutions) - 1) * (self.fade_steps +
                                                                   self.stable_steps)

    def stage(self, step: int) -> tuple[int, float]:
        """(resolution, alpha) for training step ``step`` (0-based)."""
        if step < 0:
            raise ValueError(f"ProgressiveSchedule: step must be >= 0, got {step}")
        if step < self.stable_steps:
            return self.start_size, 1.0
        step -= self.stable_steps
        for res in self.resolutions[1:]:
            if step < self.fade_steps:
                return res, (step + 1) / (self.fade_steps + 1)
            step -= self.fade_steps
            if step < self.stable_steps:
                return res, 1.0
            step -= self.stable_steps
        return self.end_size, 1.0


def fade_images(x: Tensor, resolution: int, alpha: float) -> Tensor:
    """Real images at the stage: x average-pooled to ``resolution``; while fading (alpha < 1)
    blended with their half-resolution version upsampled (nearest)."""
    if x.shape[-1] != resolution:
        x = F.adaptive_avg_pool2d(x, resolution)
    if alpha < 1.0 and resolution > 4:
        lo = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
        x = alpha * x + (1 - alpha) * lo
    return x


def he_init_(module: nn.Module) -> None:
    """He (Kaiming) normal init for LeakyReLU(0.2) of every conv, zero biases. Without
    normalisation layers DCGAN's N(0, 0.02) would shrink the signal to nothing in deep stacks."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class _Staged(nn.Module):
    """Holds the stage (resolution, alpha) in buffers."""

    def _init_stage(self, image_size: int, start_size: int):
        self.register_buffer("stage_resolution", torch.tensor(start_size, dtype=torch.int64))
        self.register_buffer("stage_alpha", torch.tensor(1.0))
        self.image_size = image_size

    def set_stage(self, resolution: int, alpha: float = 1.0) -> None:
        if resolution < 4 or resolution > self.image_size or resolution & (resolution - 1):
            raise ValueError(f"{type(self).__name__}: resolution must be a power of two in "
                             f"[4, {self.image_size}], got {resolution}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"{type(self).__name__}: alpha must be in [0, 1], got {alpha}")
        self.stage_resolution.fill_(resolution)
        self.stage_alpha.fill_(alpha)

    @property
    def resolution(self) -> int:
        return int(self.stage_resolution)

    @property
    def alpha(self) -> float:
        return float(self.stage_alpha)


class ProgressiveGenerator(_Staged):
    """z (B, z_dim) -> image in [-1, 1] at the stage's resolution (``native=True``) or
    nearest-upsampled to image_size (default, what scoring and the latent search use)."""

    def __init__(self, z_dim: int, image_size: int, channels: int, width: int = 64,
                 max_width: int = 512, start_size: int = 4):
        super().__init__()
        check_net_size("ProgressiveGenerator", image_size, channels)
        check_width("ProgressiveGenerator", z_dim=z_dim, width=width, max_width=max_width)
        self.z_dim, self.channels = z_dim, channels
        ch = lambda r: width_at(r, image_size, width, max_width)  # noqa: E731
        self.base = nn.Sequential(
            nn.ConvTranspose2d(z_dim, ch(4), 4, 1, 0), nn.LeakyReLU(0.2), PixelNorm(),
            nn.Conv2d(ch(4), ch(4), 3, 1, 1), nn.LeakyReLU(0.2), PixelNorm())
        self.blocks = nn.ModuleDict()
        self.to_rgb = nn.ModuleDict({"4": nn.Conv2d(ch(4), channels, 1)})
        r = 8
        while r <= image_size:
            self.blocks[str(r)] = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(ch(r // 2), ch(r), 3, 1, 1), nn.LeakyReLU(0.2), PixelNorm(),
                nn.Conv2d(ch(r), ch(r), 3, 1, 1), nn.LeakyReLU(0.2), PixelNorm())
            self.to_rgb[str(r)] = nn.Conv2d(ch(r), channels, 1)
            r *= 2
        self._init_stage(image_size, start_size)
        he_init_(self)

    def forward(self, z: Tensor, native: bool = False) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"ProgressiveGenerator: z must have shape (B, {self.z_dim}), got "
                             f"{tuple(z.shape)}")
        res, alpha = self.resolution, self.alpha
        h = self.base(z[:, :, None, None])
        prev, r = h, 4
        while r < res:
            prev, r = h, r * 2
            h = self.blocks[str(r)](h)
        out = self.to_rgb[str(res)](h)
        if alpha < 1.0 and res > 4:
            lo = F.interpolate(self.to_rgb[str(res // 2)](prev), scale_factor=2, mode="nearest")
            out = alpha * out + (1 - alpha) * lo
        out = torch.tanh(out)
        if not native and res < self.image_size:
            out = F.interpolate(out, size=self.image_size, mode="nearest")
        return out


class ProgressiveDiscriminator(_Staged):
    """image in [-1, 1] of any power-of-two size >= the stage's resolution (average-pooled
    down to it) -> logits (B,); ``features(x)`` -> (B, feature_dim), the 4x4 layer."""

    def __init__(self, image_size: int, channels: int, width: int = 64, max_width: int = 512,
                 start_size: int = 4):
        super().__init__()
        check_net_size("ProgressiveDiscriminator", image_size, channels)
        check_width("ProgressiveDiscriminator", width=width, max_width=max_width)
        self.channels = channels
        ch = lambda r: width_at(r, image_size, width, max_width)  # noqa: E731
        self.from_rgb = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        r = 4
        while r <= image_size:
            self.from_rgb[str(r)] = nn.Sequential(nn.Conv2d(channels, ch(r), 1), nn.LeakyReLU(0.2))
            if r > 4:
                self.blocks[str(r)] = nn.Sequential(
                    nn.Conv2d(ch(r), ch(r), 3, 1, 1), nn.LeakyReLU(0.2),
                    nn.Conv2d(ch(r), ch(r // 2), 3, 1, 1), nn.LeakyReLU(0.2), nn.AvgPool2d(2))
            r *= 2
        self.final = nn.Sequential(nn.Conv2d(ch(4), ch(4), 3, 1, 1), nn.LeakyReLU(0.2))
        self.head = nn.Conv2d(ch(4), 1, 4, 1, 0)
        self.feature_dim = ch(4) * 16
        self._init_stage(image_size, start_size)
        he_init_(self)

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        res, alpha = self.resolution, self.alpha
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[-1] < res or \
                x.shape[-1] != x.shape[-2]:
            raise ValueError(f"ProgressiveDiscriminator: x must have shape (B, {self.channels}, "
                             f"S, S) with S >= {res}, got {tuple(x.shape)}")
        if x.shape[-1] != res:
            x = F.adaptive_avg_pool2d(x, res)
        h = self.from_rgb[str(res)](x)
        if res > 4:
            h = self.blocks[str(res)](h)
            if alpha < 1.0:
                h = alpha * h + (1 - alpha) * self.from_rgb[str(res // 2)](F.avg_pool2d(x, 2))
        r = res // 2
        while r > 4:
            h = self.blocks[str(r)](h)
            r //= 2
        f = self.final(h)
        return self.head(f).flatten(), f.flatten(1)

    def features(self, x: Tensor) -> Tensor:
        return self.forward_with_features(x)[1]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_features(x)[0]
