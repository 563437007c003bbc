"""Per-pixel-position standardisation of residual maps, for parts imaged in one pose.

Aligned parts (solar cells, boards in a jig, labels on a conveyor) do not have the same normal
residual everywhere: a busbar, a rounded corner or a fixture edge leaves a larger residual at
its place in every image, and an image score that is the largest patch of the raw map then
ranks normal parts with a bright corner above a defective part with a faint crack. A
:class:`PositionReference` holds, for every pixel position (i, j) of the scoring size (H, W),
the mean mu and the standard deviation sigma of the maps of N normal images, and turns a map r
into

    z(i, j) = (r(i, j) - mu(i, j)) / (sigma(i, j) + floor)

``floor`` (in the map's units, [0, 1] for residuals) keeps positions where every normal image
reconstructs alike (sigma ~ 0) from turning rounding noise into large z. The image score is
then the patch top-n of z (:func:`anomgan.scoring.patches.map_scores`).

Statistics: float64 sums of r and r^2 over the images (population std), stored as float32
(H, W) tensors. The reference belongs to one size: a map of another size is a ValueError.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validate import check_real

__all__ = ["PositionReference", "PositionStats"]


@dataclass
class PositionReference:
    """mean, std: (H, W) float32 on the CPU; images: how many normal maps they summarise;
    floor: the constant added to std (see the module doc)."""
    mean: torch.Tensor
    std: torch.Tensor
    images: int
    floor: float

    def __post_init__(self):
        for name in ("mean", "std"):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or not t.is_floating_point():
                raise TypeError(f"PositionReference: {name} must be a 2-d float tensor, got "
                                f"{type(t).__name__} {tuple(getattr(t, 'shape', ()))}")
        if self.mean.shape != self.std.shape:
            raise ValueError(f"PositionReference: mean {tuple(self.mean.shape)} and std "
                             f"{tuple(self.std.shape)} must have one shape")
        if not (torch.isfinite(self.mean).all() and torch.isfinite(self.std).all()) or (self.std < 0).any():
            raise ValueError("PositionReference: mean and std must be finite, std >= 0")
        self.floor = float(check_real("PositionReference", "floor", self.floor, 0.0, lo_open=True))
        if int(self.images) < 1:
            raise ValueError(f"PositionReference: images must be >= 1, got {self.images}")
        self.mean, self.std = self.mean.float().cpu(), self.std.float().cpu()

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.mean.shape)

    def standardise(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, H, W) maps -> (B, H, W) z maps in the maps' dtype and device; ValueError when
        (H, W) is not the reference's size."""
        if maps.dim() != 3 or tuple(maps.shape[-2:]) != self.size:
            raise ValueError(f"position standardisation: this detector's reference is for "
                             f"{self.size[0]}x{self.size[1]} images (the size its normal images "
                             f"had), got maps of shape {tuple(maps.shape)}; score images of that "
                             f"size, or train without map_norm='position'")
        mean = self.mean.to(maps.device, maps.dtype)
        scale = (self.std.double() + self.floor).reciprocal().to(maps.device, maps.dtype)
        return (maps - mean) * scale


class PositionStats:
    """Running float64 sums of maps of one size, for :meth:`reference`."""

    def __init__(self):
        self.n, self.s1, self.s2 = 0, None, None

    def add(self, maps: torch.Tensor) -> None:
        m = maps.detach().double().cpu()
        if m.dim() != 3:
            raise ValueError(f"PositionStats.add: maps must be (B, H, W), got {tuple(m.shape)}")
        if self.s1 is None:
            self.s1, self.s2 = torch.zeros(m.shape[-2:], dtype=torch.float64), torch.zeros(m.shape[-2:], dtype=torch.float64)
        elif tuple(m.shape[-2:]) != tuple(self.s1.shape):
            raise ValueError(f"PositionStats.add: maps of {tuple(m.shape[-2:])} after maps of "
                             f"{tuple(self.s1.shape)}: the normal images must share one size")
        self.n += m.shape[0]
        self.s1 += m.sum(0)
        self.s2 += (m * m).sum(0)

    def reference(self, floor: float) -> PositionReference:
        if self.n < 1:
            raise ValueError("PositionStats.reference: no maps were added")
        mean = self.s1 / self.n
        var = (self.s2 / self.n - mean * mean).clamp_min(0.0)
        return PositionReference(mean.float(), var.sqrt().float(), self.n, float(floor))
