"""Fused residual + feature-matching loss of the AnoGAN latent search (docs/METHODS.md §1,
§5 "Fused residual + feature-matching loss").

Contract
--------
x, gz   : (B, ...) the query images and the generated ones G(z); one shape.
fx, fgz : (B, ...) D's intermediate features f(x) and f(G(z)); one shape (any, batch first).
All four share one dtype (float32, float16, bfloat16 or float64) and one device; any strides.
With N = x[b].numel() and M = fx[b].numel() (both >= 1):

  reduction="mean":  loss[b] = (1 - lam) * mean |x[b] - gz[b]| + lam * mean |fx[b] - fgz[b]|
  reduction="sum":   loss[b] = (1 - lam) * sum  |x[b] - gz[b]| + lam * sum  |fx[b] - fgz[b]|
                     (AnoGAN's L(z) = (1 - lam) L_R + lam L_D as published)

Output (B,) float32 (float64 for float64 inputs); lam in [0, 1]. NaN in a sample makes its
loss NaN, no error.

Gradient, given the incoming per-sample gradient g (B,):
  d loss / d gz[b]  = g[b] * sign(gz[b] - x[b]) * (1 - lam) / N   (/ 1 for "sum")
  d loss / d fgz[b] = g[b] * sign(fgz[b] - fx[b]) * lam / M       (/ 1 for "sum")
  d loss / d x = -d loss / d gz,   d loss / d fx = -d loss / d fgz
sign(0) = 0, so elements where the two inputs are equal get a zero gradient (as torch's abs).
Gradients have the dtype of the input they belong to. The kernel backends compute them in one
elementwise pass (their own backward op), not by autograd.
"""
from __future__ import annotations

import torch

from . import _backends
from ._backends import out_dtype
from .._validate import check_real, check_same, check_tensor

OP = "residual_fm_loss"
_COMPILED = ("anomgan::residual_fm_loss_fwd", "anomgan::residual_fm_loss_bwd")  # CPU and CUDA
_TRITON = "anomgan.ops.triton.residual_fm_loss"
SUPPORTED = _backends.register_kernels(OP, cpp=_COMPILED, cuda=_COMPILED,
                                       triton=(f"{_TRITON}:forward", f"{_TRITON}:backward"))
REDUCTIONS = ("mean", "sum")


def _check(x, gz, fx, fgz, lam, reduction):
    for name, t in (("x", x), ("gz", gz), ("fx", fx), ("fgz", fgz)):
        check_tensor(OP, name, t, min_ndim=1)
    check_same(OP, "x", x, "gz", gz)
    check_same(OP, "fx", fx, "fgz", fgz)
    check_same(OP, "x", x, "fx", fx, shape=False)
    if x.shape[0] != fx.shape[0]:
        raise ValueError(f"{OP}: x and fx must have the same batch size (first dimension), got "
                         f"shapes {tuple(x.shape)} and {tuple(fx.shape)}")
    for name, t in (("x", x), ("fx", fx)):
        if t.shape[1:].numel() == 0:
            raise ValueError(f"{OP}: each sample of {name} must have at least one element, got "
                             f"shape {tuple(t.shape)}")
    lam = check_real(OP, "lam", lam, 0.0, 1.0)
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"{OP}: reduction must be one of {', '.join(map(repr, REDUCTIONS))}, "
                         f"got {reduction!r}")
    return lam


def residual_fm_loss_reference(x, gz, fx, fgz, lam=0.1, reduction="mean"):
    """Pure-PyTorch per-sample loss (B,); differentiable by autograd (abs' gradient is
    sign(.) with sign(0) = 0, the contract's)."""
    od = out_dtype(x.dtype)
    B = x.shape[0]
    r = (x.to(od) - gz.to(od)).abs().reshape(B, x.shape[1:].numel())
    f = (fx.to(od) - fgz.to(od)).abs().reshape(B, fx.shape[1:].numel())
    if reduction == "mean":
        return (1.0 - lam) * r.mean(1) + lam * f.mean(1)
    return (1.0 - lam) * r.sum(1) + lam * f.sum(1)


def _sample_rows(t: torch.Tensor) -> torch.Tensor:
    """t itself when each sample's elements are contiguous (any batch stride, 0 included, so a
    batch slice or an expanded query costs no copy); else a contiguous copy."""
    expected = 1
    for size, stride in reversed(list(zip(t.shape[1:], t.stride()[1:]))):
        if size != 1 and stride != expected:
            return t.contiguous()
        expected *= size
    return t


class _KernelResidualFM(torch.autograd.Function):
    """Autograd around a kernel backend's forward (loss) and backward (grad_gz, grad_fgz)."""

    @staticmethod
    def forward(ctx, x, gz, fx, fgz, lam, reduction, backend):
        fwd, bwd = _backends.kernels(OP, backend)
        loss = fwd(x, gz, fx, fgz, lam, reduction)
        ctx.save_for_backward(x, gz, fx, fgz)
        ctx.lam, ctx.reduction, ctx.bwd = lam, reduction, bwd
        return loss

    @staticmethod
    def backward(ctx, g):
        x, gz, fx, fgz = ctx.saved_tensors
        need = ctx.needs_input_grad
        gx = ggz = gfx = gfgz = None
        if any(need[:4]):
            g_gz, g_fgz = ctx.bwd(g.contiguous(), x, gz, fx, fgz, ctx.lam, ctx.reduction)
            # |a - b| is symmetric: d/da = -d/db
            gx = -g_gz if need[0] else None
            ggz = g_gz if need[1] else None
            gfx = -g_fgz if need[2] else None
            gfgz = g_fgz if need[3] else None
        return gx, ggz, gfx, gfgz, None, None, None


def residual_fm_loss(x: torch.Tensor, gz: torch.Tensor, fx: torch.Tensor, fgz: torch.Tensor, *,
                     lam: float = 0.1, reduction: str = "mean",
                     backend: str | None = None) -> torch.Tensor:
    """Per-sample loss (B,) — see the module docstring for the contract.

    backend: "torch", "cpp", "triton", "cuda" or None (ANOMGAN_BACKEND, else the fastest
    available for x's device). Raises TypeError/ValueError on bad input before any kernel
    runs, BackendUnavailableError when the asked backend cannot run here.
    """
    lam = _check(x, gz, fx, fgz, lam, reduction)
    be = _backends.resolve_backend(backend, x.device, OP, SUPPORTED)
    if be == "torch" or x.shape[0] == 0:
        return residual_fm_loss_reference(x, gz, fx, fgz, lam, reduction)
    x, gz, fx, fgz = (_sample_rows(t) for t in (x, gz, fx, fgz))
    return _KernelResidualFM.apply(x, gz, fx, fgz, lam, reduction, be)
