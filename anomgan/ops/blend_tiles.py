"""Accumulation of weighted tile maps into a float64 canvas: the inner step of blending tiles
back into an image (:mod:`anomgan.scoring.tiling`, docs/METHODS.md §6).

Contract
--------
acc     : (B, H, W) float64, contiguous; updated in place.
maps    : (n, t, t) float32 or float64 (any strides).
ny, nx  : (n, t) float64: each tile's row and column weights.
origins : (n, 3) int64: (image, y0, x0) of each tile; every tile must lie inside acc.
For every tile k, in order: acc[b, y0 + i, x0 + j] += (maps[k, i, j] * ny[k, i]) * nx[k, j],
computed in float64. A pixel covered by several tiles sums them in tile order, so both
backends give bit-identical results, whatever the thread count.

Backends: ``torch`` (the reference: the products in one float64 buffer, then one
``index_add_`` over the tiles' flat indices) on any device; ``cpp`` (csrc/cpu/blend_tiles_cpu.cpp:
no temporaries, rows in parallel) on the CPU. Errors: TypeError for a wrong dtype, ValueError
for a wrong shape, device or a tile outside acc, before anything is written.
"""
from __future__ import annotations

import torch

from . import _backends

OP = "blend_tiles_add"
SUPPORTED = _backends.register_kernels(OP, cpp="anomgan::blend_tiles_add")


def _check(acc, maps, ny, nx, origins) -> None:
    for name, t in (("acc", acc), ("maps", maps), ("ny", ny), ("nx", nx), ("origins", origins)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if acc.dtype != torch.float64:
        raise TypeError(f"{OP}: acc must be float64, got {acc.dtype}")
    if acc.dim() != 3 or not acc.is_contiguous():
        raise ValueError(f"{OP}: acc must be a contiguous (B, H, W) tensor, got shape {tuple(acc.shape)} "
                         f"and strides {acc.stride()}")
    if maps.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{OP}: maps must be float32 or float64, got {maps.dtype}")
    if maps.dim() != 3 or maps.shape[1] != maps.shape[2] or maps.shape[1] < 1:
        raise ValueError(f"{OP}: maps must be (n, t, t), got {tuple(maps.shape)}")
    n, t = maps.shape[0], maps.shape[1]
    for name, w in (("ny", ny), ("nx", nx)):
        if w.dtype != torch.float64:
            raise TypeError(f"{OP}: {name} must be float64, got {w.dtype}")
        if tuple(w.shape) != (n, t):
            raise ValueError(f"{OP}: {name} must be (n, t) = ({n}, {t}), got {tuple(w.shape)}")
    if origins.dtype != torch.int64:
        raise TypeError(f"{OP}: origins must be int64, got {origins.dtype}")
    if tuple(origins.shape) != (n, 3):
        raise ValueError(f"{OP}: origins must be (n, 3) = ({n}, 3), got {tuple(origins.shape)}")
    for name, x in (("maps", maps), ("ny", ny), ("nx", nx), ("origins", origins)):
        if x.device != acc.device:
            raise ValueError(f"{OP}: {name} is on {x.device}, acc on {acc.device}: one device, please")
    B, H, W = acc.shape
    if n and (t > H or t > W):
        raise ValueError(f"{OP}: tiles of {t}x{t} do not fit in acc of {H}x{W}")
    if n:
        b, y, x = origins.unbind(1)
        bad = (b < 0) | (b >= B) | (y < 0) | (y + t > H) | (x < 0) | (x + t > W)
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            raise ValueError(f"{OP}: tile {k} at (image, y, x) = {tuple(origins[k].tolist())} does not lie "
                             f"inside acc of shape {tuple(acc.shape)} (tile size {t})")


def blend_tiles_add_reference(acc, maps, ny, nx, origins) -> torch.Tensor:
    """The PyTorch reference (see the module doc); returns ``acc``."""
    n, t = maps.shape[0], maps.shape[1]
    if n == 0:
        return acc
    vals = maps.to(torch.float64).mul(ny[:, :, None]).mul_(nx[:, None, :])
    _, H, W = acc.shape
    r = torch.arange(t, device=acc.device)
    b, y, x = origins.unbind(1)
    base = (b * H + y) * W + x                                        # (n,) tile origins
    flat = base[:, None, None] + (r[:, None] * W + r[None, :])       # (n, t, t), ascending
    acc.view(-1).index_add_(0, flat.reshape(-1), vals.reshape(-1))
    return acc


def blend_tiles_add(acc, maps, ny, nx, origins, *, backend: str | None = None) -> torch.Tensor:
    """acc[b, y0 + i, x0 + j] += (maps[k, i, j] * ny[k, i]) * nx[k, j] for every tile k (module
    doc); returns ``acc``. ``backend``: None (the fastest available), "torch" or "cpp"."""
    _check(acc, maps, ny, nx, origins)
    backend = _backends.resolve_backend(backend, acc.device, OP, SUPPORTED)
    if backend == "torch":
        return blend_tiles_add_reference(acc, maps, ny, nx, origins)
    (kernel,) = _backends.kernels(OP, backend)
    kernel(acc, maps, ny, nx, origins)
    return acc
