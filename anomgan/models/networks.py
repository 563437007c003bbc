"""DCGAN-style networks (Radford et al. 2016) sized from the image: generator, discriminator
with a feature layer, and an image encoder with the discriminator's trunk.

Sizes: ``image_size`` a power of two in [8, 1024] (methods accept >= 16; MNIST's 28x28 is
resized to 32x32 by the data module, not padded here); ``channels`` 1 or 3.
Widths: the layer working at resolution r has ``width_at(r) = min(max_width,
width * image_size // (2 r))`` channels (at least ``width``), so the layer next to the image has
``width`` channels and each halving of the resolution doubles them up to ``max_width``
(DCGAN at 64x64 with width 64: 512, 256, 128, 64).

Generator:      z (B, z_dim) -> 1x1 -> 4x4 -> ... -> image_size, tanh output in [-1, 1].
Discriminator:  image in [-1, 1] -> ... -> 4x4 trunk -> 4x4 valid conv -> logits (B,).
                ``features(x)`` is the flattened 4x4 trunk output (B, width_at(4) * 16), the
                intermediate layer f(.) of feature matching.
Encoder:        image in [-1, 1] -> the same trunk -> z (B, z_dim) (unbounded).
Normalisation: ``norm="batch"`` (DCGAN; none on the discriminator's first layer) or "none".
Initialisation: DCGAN's N(0, 0.02) conv weights, N(1, 0.02) BatchNorm scales, from torch's
global RNG (seed it for reproducibility). Everything is deterministic on CPU.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validate import check_choice, check_int

NORMS = ("batch", "none")


def symbolic(x) -> bool:
    """True for a torch.fx Proxy: a network being traced symbolically (the int8 quantizer traces
    whole encoders and generators), where the shape checks of ``forward`` cannot run; they run on
    every real tensor."""
    return isinstance(x, torch.fx.Proxy)


def check_net_size(name: str, image_size: int, channels: int, minimum: int = 8) -> None:
    """image_size a power of two in [minimum, 1024]; channels an int >= 1."""
    image_size = check_int(name, "image_size", image_size)
    if image_size < minimum or image_size > 1024 or image_size & (image_size - 1):
        raise ValueError(f"{name}: image_size must be a power of two in [{minimum}, 1024], "
                         f"got {image_size}")
    check_int(name, "channels", channels, minimum=1)


def check_width(name: str, **widths) -> None:
    """Every keyword an int >= 1."""
    for k, v in widths.items():
        check_int(name, k, v, minimum=1)


def width_at(r: int, image_size: int, width: int, max_width: int) -> int:
    """Channels of the layer working at resolution r (see the module docstring)."""
    return max(width, min(max_width, width * max(1, image_size // (2 * r))))


def norm_layer(kind: str, ch: int) -> nn.Module:
    """The normalisation after a conv with ``ch`` output channels: "batch" (BatchNorm2d),
    "group" (GroupNorm in groups of up to 8 channels: batch-independent, the same in training
    and eval) or "none" (Identity)."""
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "group":
        return nn.GroupNorm(max(1, ch // 8), ch)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of 'batch', 'group', 'none', got {kind!r}")


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN initialisation of every conv/linear/BatchNorm inside ``module`` (in place)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (B, z_dim) -> image (B, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, z_dim: int, image_size: int, channels: int, width: int = 64,
                 max_width: int = 512, norm: str = "batch"):
        super().__init__()
        check_net_size("Generator", image_size, channels)
        check_width("Generator", z_dim=z_dim, width=width, max_width=max_width)
        check_choice("Generator", "norm", norm, NORMS)
        self.z_dim, self.image_size, self.channels = z_dim, image_size, channels
        ch = lambda r: width_at(r, image_size, width, max_width)  # noqa: E731
        use_bias = norm == "none"
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, ch(4), 4, 1, 0, bias=use_bias),
                                   norm_layer(norm, ch(4)), nn.ReLU(True)]
        r = 4
        while 2 * r < image_size:
            layers += [nn.ConvTranspose2d(ch(r), ch(2 * r), 4, 2, 1, bias=use_bias),
                       norm_layer(norm, ch(2 * r)), nn.ReLU(True)]
            r *= 2
        layers += [nn.ConvTranspose2d(ch(r), channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, z: Tensor) -> Tensor:
        if not symbolic(z) and (z.dim() != 2 or z.shape[1] != self.z_dim):
            raise ValueError(f"Generator: z must have shape (B, {self.z_dim}), got "
                             f"{tuple(z.shape)}")
        return self.net(z[:, :, None, None])


class DownTrunk(nn.Module):
    """image (B, channels, S, S) -> (B, width_at(4), 4, 4): stride-2 4x4 convs, LeakyReLU 0.2,
    normalisation on every layer but the first."""

    def __init__(self, image_size: int, channels: int, width: int = 64, max_width: int = 512,
                 norm: str = "batch"):
        super().__init__()
        check_net_size(type(self).__name__, image_size, channels)
        check_width(type(self).__name__, width=width, max_width=max_width)
        check_choice(type(self).__name__, "norm", norm, NORMS)
        self.image_size, self.channels = image_size, channels
        ch = lambda r: width_at(r, image_size, width, max_width)  # noqa: E731
        use_bias = norm == "none"
        r = image_size // 2
        layers: list[nn.Module] = [nn.Conv2d(channels, ch(r), 4, 2, 1),
                                   nn.LeakyReLU(0.2, True)]
        while r > 4:
            layers += [nn.Conv2d(ch(r), ch(r // 2), 4, 2, 1, bias=use_bias),
                       norm_layer(norm, ch(r // 2)), nn.LeakyReLU(0.2, True)]
            r //= 2
        self.net = nn.Sequential(*layers)
        self.out_channels = ch(4)

    def forward(self, x: Tensor) -> Tensor:
        want = (self.channels, self.image_size, self.image_size)
        if not symbolic(x) and (x.dim() != 4 or tuple(x.shape[1:]) != want):
            raise ValueError(f"{type(self).__name__}: x must have shape (B, {want[0]}, "
                             f"{want[1]}, {want[2]}), got {tuple(x.shape)}")
        return self.net(x)


class Discriminator(nn.Module):
    """image in [-1, 1] -> logits (B,) (real > 0); ``features(x)`` -> (B, feature_dim)."""

    def __init__(self, image_size: int, channels: int, width: int = 64, max_width: int = 512,
                 norm: str = "batch"):
        super().__init__()
        self.trunk = DownTrunk(image_size, channels, width, max_width, norm)
        self.head = nn.Conv2d(self.trunk.out_channels, 1, 4, 1, 0)
        self.image_size, self.channels = image_size, channels
        self.feature_dim = self.trunk.out_channels * 16
        dcgan_init_(self)

    def features(self, x: Tensor) -> Tensor:
        """f(x): the flattened 4x4 trunk output, (B, feature_dim)."""
        return self.trunk(x).flatten(1)

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(logits (B,), features (B, feature_dim)) from one pass."""
        h = self.trunk(x)
        return self.head(h).flatten(), h.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x)).flatten()


class Encoder(nn.Module):
    """image in [-1, 1] -> z (B, z_dim): the discriminator's trunk and a 4x4 valid conv."""

    def __init__(self, z_dim: int, image_size: int, channels: int, width: int = 64,
                 max_width: int = 512, norm: str = "batch"):
        super().__init__()
        check_width("Encoder", z_dim=z_dim)
        self.trunk = DownTrunk(image_size, channels, width, max_width, norm)
        self.head = nn.Conv2d(self.trunk.out_channels, z_dim, 4, 1, 0)
        self.z_dim, self.image_size, self.channels = z_dim, image_size, channels
        dcgan_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x)).flatten(1)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
