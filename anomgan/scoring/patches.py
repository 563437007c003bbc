"""The patch top-n image score over per-pixel maps, and the one rule for its window grid.

A map (B, H, W) is covered by patch×patch windows every ``stride`` pixels; the image score is
the mean of the ``n`` largest window means (:func:`anomgan.ops.patch_topn_l1`). The grid rule
(:func:`patch_grid`) is shared by the training loss of ``dual-disc`` and by the detector.
"""
from __future__ import annotations

import torch

from .._validate import check_int
from ..ops import patch_topn_l1

DEFAULT_PATCH = 16


def patch_grid(height: int, width: int, patch: int | None = None, stride: int | None = None,
               n: int = 3) -> tuple[int, int, int]:
    """(patch, stride, n) for a height×width map.

    patch  : None -> min(16, min(height, width) // 2) (the paper's 16 at sizes >= 32; 8 at 16);
             an explicit patch larger than the map is a ValueError.
    stride : None -> max(1, patch // 2).
    n      : the number of top windows averaged; a map with fewer windows averages all of them.
    """
    side = min(height, width)
    if patch is None:
        patch = max(1, min(DEFAULT_PATCH, side // 2))
    check_int("patch_grid", "patch", patch, minimum=1)
    if patch > side:
        raise ValueError(f"patch_grid: patch {patch} does not fit a {height}x{width} map "
                         f"(it must be <= {side})")
    stride = max(1, patch // 2) if stride is None else check_int("patch_grid", "stride", stride,
                                                                 minimum=1)
    check_int("patch_grid", "n", n, minimum=1)
    windows = ((height - patch) // stride + 1) * ((width - patch) // stride + 1)
    return patch, stride, min(n, windows)


def map_scores(maps: torch.Tensor, patch: int | None, stride: int | None, n: int,
               backend: str | None = None) -> torch.Tensor:
    """Image scores (B,) float32 of per-pixel maps (B, H, W): the patch top-n of the map (the
    windows of :func:`patch_grid`)."""
    H, W = maps.shape[-2:]
    patch, stride, n = patch_grid(H, W, patch, stride, n)
    e = maps.unsqueeze(1).contiguous()
    scores, _ = patch_topn_l1(e, torch.zeros_like(e), patch=patch, stride=stride, n=n,
                              backend=backend)
    return scores.float()
