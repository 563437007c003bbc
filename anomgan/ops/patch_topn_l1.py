"""Patch-wise top-n L1 score: the image score for high-resolution inspection and the patch
loss of the dual-discriminator method (docs/METHODS.md §4, §5.3).

Contract
--------
x, y : (B, C, H, W) tensors of one shape, dtype and device; float32, float16, bfloat16 or
       float64; any strides.
e[b, h, w]      = mean over c of |x[b, c, h, w] - y[b, c, h, w]|          (pixel_error_map)
patch_map[b,i,j] = mean of e over the window rows [i*stride, i*stride+patch),
                   columns [j*stride, j*stride+patch);  shape (B, Hp, Wp) with
                   Hp = (H - patch)//stride + 1, Wp = (W - patch)//stride + 1
scores[b]       = mean of the n largest patch_map[b] values
Outputs are float32 (float64 for float64 inputs). Ties among window means are broken towards
the lowest flat window index (i*Wp + j) by the kernels. An image containing NaN gets a NaN
score (and NaN windows); no error is raised.

Gradient (w.r.t. y, and -1 times it w.r.t. x): every pixel receives
sign(y - x)/C/patch² times the sum, over the windows covering it, of that window's incoming
gradient; for the score that is grad_score/n on each of the n selected windows. sign(0) = 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _backends
from ._backends import out_dtype
from .._validate import check_int, check_same, check_tensor

OP = "patch_topn_l1"
_COMPILED = ("anomgan::patch_topn_l1_fwd", "anomgan::patch_topn_l1_bwd")  # CPU and CUDA
_TRITON = "anomgan.ops.triton.patch_topn_l1"
SUPPORTED = _backends.register_kernels(OP, cpp=_COMPILED, cuda=_COMPILED,
                                       triton=(f"{_TRITON}:forward", f"{_TRITON}:backward"))


def _check(x, y, patch, stride, n):
    check_tensor(OP, "x", x, ndim=4)
    check_tensor(OP, "y", y, ndim=4)
    check_same(OP, "x", x, "y", y)
    check_int(OP, "patch", patch, minimum=1)
    check_int(OP, "stride", stride, minimum=1)
    check_int(OP, "n", n, minimum=1)
    B, C, H, W = x.shape
    if C < 1:
        raise ValueError(f"{OP}: x must have at least one channel, got shape {tuple(x.shape)}")
    if patch > H or patch > W:
        raise ValueError(f"{OP}: patch must be <= the image height and width, got patch={patch} "
                         f"for images of {H}x{W}")
    hp, wp = (H - patch) // stride + 1, (W - patch) // stride + 1
    if n > hp * wp:
        raise ValueError(f"{OP}: n must be <= the number of windows ({hp}x{wp}={hp * wp} for "
                         f"{H}x{W} images, patch={patch}, stride={stride}), got n={n}")
    return hp, wp


def pixel_error_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, H, W) per-pixel error: mean over channels of |x - y|, float32 (float64 for float64
    inputs). Differentiable. x, y: (B, C, H, W) of one shape, dtype and device."""
    check_tensor("pixel_error_map", "x", x, ndim=4)
    check_tensor("pixel_error_map", "y", y, ndim=4)
    check_same("pixel_error_map", "x", x, "y", y)
    od = out_dtype(x.dtype)
    return (x.to(od) - y.to(od)).abs().mean(dim=1)


def patch_topn_l1_reference(x, y, patch, stride, n):
    """Pure-PyTorch (scores, patch_map): avg_pool2d of the pixel-error map, then topk.

    The window means come from one pooling pass over the (B, H, W) error map, not from an
    unfold of the image (which materialises patch²/stride² copies of it). Differentiable by
    autograd."""
    e = pixel_error_map(x, y)
    pmap = F.avg_pool2d(e.unsqueeze(1), kernel_size=patch, stride=stride).squeeze(1)
    top = pmap.flatten(1).topk(n, dim=1).values
    scores = top.mean(dim=1)
    # topk orders NaN as largest, so an image with a NaN window scores NaN.
    return scores, pmap


class _KernelPatchTopN(torch.autograd.Function):
    """Autograd around a kernel backend's forward (scores, map, top_idx) and backward ops."""

    @staticmethod
    def forward(ctx, x, y, patch, stride, n, backend):
        fwd, bwd = _backends.kernels(OP, backend)
        scores, pmap, top_idx = fwd(x, y, patch, stride, n)
        ctx.save_for_backward(x, y, top_idx)
        ctx.patch, ctx.stride, ctx.bwd = patch, stride, bwd
        ctx.mark_non_differentiable(top_idx)
        return scores, pmap, top_idx

    @staticmethod
    def backward(ctx, g_scores, g_map, _g_idx):
        x, y, top_idx = ctx.saved_tensors
        grad_x = grad_y = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_y = ctx.bwd(g_scores, g_map, x, y, top_idx, ctx.patch, ctx.stride)
            # |x - y| is symmetric: d/dx = -d/dy
            grad_x = -grad_y if ctx.needs_input_grad[0] else None
            grad_y = grad_y if ctx.needs_input_grad[1] else None
        return grad_x, grad_y, None, None, None, None


def patch_topn_l1(x: torch.Tensor, y: torch.Tensor, *, patch: int = 16, stride: int = 8,
                  n: int = 3, backend: str | None = None):
    """(scores (B,), patch_map (B, Hp, Wp)) — see the module docstring for the contract.

    backend: "torch", "cpp", "triton", "cuda" or None (ANOMGAN_BACKEND, else the fastest
    available for x's device). Raises TypeError/ValueError on bad input before any kernel
    runs, BackendUnavailableError when the asked backend cannot run here.
    """
    _check(x, y, patch, stride, n)
    be = _backends.resolve_backend(backend, x.device, OP, SUPPORTED)
    if be == "torch" or x.shape[0] == 0:
        return patch_topn_l1_reference(x, y, patch, stride, n)
    # kernels read rows with unit stride; other strides are honoured, a non-unit last one copied
    x = x if x.stride(-1) == 1 else x.contiguous()
    y = y if y.stride(-1) == 1 else y.contiguous()
    scores, pmap, _ = _KernelPatchTopN.apply(x, y, patch, stride, n, be)
    return scores, pmap
