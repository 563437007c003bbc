"""Batched in-place Adam step for the latent vectors of the AnoGAN search: every sample has its
own Adam state (moments and step count) and may be frozen (docs/METHODS.md §1, §5.2).

Contract
--------
z, grad, exp_avg, exp_avg_sq : (B, D), one dtype (float32 or float64), one device; z and the
                               moments are updated in place (any strides).
step   : (B,) int64, the number of steps each sample has taken; incremented in place for the
         active samples.
active : (B,) bool; inactive samples are left untouched (z, moments and step).
lr     : a float >= 0, or a (B,) float32/float64 tensor on z's device (per-sample rate).
For each active sample b, with t = step[b] + 1 (torch.optim.Adam, no weight decay, no amsgrad):

  step[b]       = t
  exp_avg[b]    = lerp(exp_avg[b], grad[b], 1 - beta1)
  exp_avg_sq[b] = beta2 * exp_avg_sq[b] + (1 - beta2) * grad[b]²
  z[b]         -= lr[b] / (1 - beta1^t) * exp_avg[b] / (sqrt(exp_avg_sq[b]) / sqrt(1 - beta2^t) + eps)

The bias corrections are computed in float64, the element updates in z's dtype, as
torch.optim.Adam does. Nothing reads a value back to the host (no .item(), no sync): the op can
be captured in a CUDA graph. Under autograd the update is not recorded (it runs in no_grad).
"""
from __future__ import annotations

import torch

from . import _backends
from .._validate import check_real

OP = "adam_step_"
SUPPORTED = _backends.register_kernels(OP, cpp="anomgan::adam_step", cuda="anomgan::adam_step",
                                       triton="anomgan.ops.triton.adam_step:adam_step_")
DTYPES = (torch.float32, torch.float64)


def _check(z, grad, exp_avg, exp_avg_sq, step, active, lr, betas, eps):
    named = (("z", z), ("grad", grad), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq),
             ("step", step), ("active", active))
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if z.dtype not in DTYPES:
        raise TypeError(f"{OP}: z must be float32 or float64, got {z.dtype}")
    if z.dim() != 2:
        raise ValueError(f"{OP}: z must be (B, D), got shape {tuple(z.shape)}")
    B = z.shape[0]
    for name, t in named[1:4]:
        if t.dtype != z.dtype:
            raise TypeError(f"{OP}: {name} must have z's dtype {z.dtype}, got {t.dtype}")
        if t.shape != z.shape:
            raise ValueError(f"{OP}: {name} must have z's shape {tuple(z.shape)}, got "
                             f"{tuple(t.shape)}")
    if step.dtype != torch.int64:
        raise TypeError(f"{OP}: step must be int64, got {step.dtype}")
    if active.dtype != torch.bool:
        raise TypeError(f"{OP}: active must be bool, got {active.dtype}")
    for name, t in named[4:]:
        if t.shape != (B,):
            raise ValueError(f"{OP}: {name} must be ({B},) (one per sample), got shape "
                             f"{tuple(t.shape)}")
    for name, t in named[1:]:
        if t.device != z.device:
            raise ValueError(f"{OP}: {name} must be on z's device {z.device}, got {t.device}")
    if isinstance(lr, torch.Tensor):
        if lr.dtype not in DTYPES:
            raise TypeError(f"{OP}: lr as a tensor must be float32 or float64, got {lr.dtype}")
        if lr.shape != (B,):
            raise ValueError(f"{OP}: lr as a tensor must be ({B},) (one per sample), got shape "
                             f"{tuple(lr.shape)}")
        if lr.device != z.device:
            raise ValueError(f"{OP}: lr must be on z's device {z.device}, got {lr.device}")
    else:
        lr = _finite_nonneg("lr", lr)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{OP}: betas must be a pair of floats, got {betas!r}")
    b1 = check_real(OP, "betas[0]", betas[0], 0.0, 1.0)
    b2 = check_real(OP, "betas[1]", betas[1], 0.0, 1.0)
    if b1 == 1.0 or b2 == 1.0:
        raise ValueError(f"{OP}: betas must be in [0, 1), got {tuple(betas)}")
    eps = _finite_nonneg("eps", eps)
    # the kernels write z and the moments in place: they must not alias themselves
    for name, t in named[:4] + named[4:5]:
        if t.numel() > 1 and _has_internal_overlap(t):
            raise ValueError(f"{OP}: {name} is written in place and must not overlap itself "
                             f"(e.g. an expanded tensor), got strides {t.stride()}")
    return lr, b1, b2, eps


def _finite_nonneg(name, v) -> float:
    v = check_real(OP, name, v)
    if not (0.0 <= v < float("inf")):
        raise ValueError(f"{OP}: {name} must be a finite number >= 0, got {v}")
    return v


def _has_internal_overlap(t: torch.Tensor) -> bool:
    return torch._debug_has_internal_overlap(t) == 1  # 1 = yes, 0 = no, 2 = too hard to tell


def adam_step_reference(z, grad, exp_avg, exp_avg_sq, step, active, lr, betas=(0.9, 0.999),
                        eps=1e-8):
    """Pure-PyTorch batched step, the same arithmetic as torch.optim.Adam's single-tensor path
    with torch.where keeping inactive samples unchanged; no host sync."""
    b1, b2 = betas
    with torch.no_grad():
        act = active.unsqueeze(1)
        new_step = step + active.to(torch.int64)
        t = new_step.clamp(min=1).to(torch.float64)  # an inactive sample at step 0: no 0/0
        bc1 = 1.0 - torch.pow(b1, t)
        bc2_sqrt = (1.0 - torch.pow(b2, t)).sqrt()
        lr_t = lr.to(torch.float64) if isinstance(lr, torch.Tensor) else lr
        neg_step_size = (-(lr_t / bc1)).to(z.dtype).unsqueeze(1)
        m = exp_avg.lerp(grad, 1.0 - b1)
        v = (exp_avg_sq * b2).addcmul_(grad, grad, value=1.0 - b2)
        # torch divides by the float64 scalar sqrt(bc2) after rounding it to z's dtype
        denom = (v.sqrt() / bc2_sqrt.to(z.dtype).unsqueeze(1)).add_(eps)
        znew = z + (neg_step_size * m) / denom  # addcdiv's order: self + (value * t1) / t2
        z.copy_(torch.where(act, znew, z))
        exp_avg.copy_(torch.where(act, m, exp_avg))
        exp_avg_sq.copy_(torch.where(act, v, exp_avg_sq))
        step.copy_(new_step)


def adam_step_(z: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor,
               exp_avg_sq: torch.Tensor, step: torch.Tensor, active: torch.Tensor, *, lr,
               betas=(0.9, 0.999), eps: float = 1e-8, backend: str | None = None) -> torch.Tensor:
    """One Adam step on the active samples, in place; returns z. See the module docstring.

    backend: "torch", "cpp", "triton", "cuda" or None (ANOMGAN_BACKEND, else the fastest
    available for z's device). Raises TypeError/ValueError on bad input before any kernel
    runs (checks of shapes, dtypes and devices only: nothing is read from the device).
    """
    lr, b1, b2, eps = _check(z, grad, exp_avg, exp_avg_sq, step, active, lr, betas, eps)
    be = _backends.resolve_backend(backend, z.device, OP, SUPPORTED)
    if z.shape[0] == 0:
        return z
    if be == "torch":
        adam_step_reference(z, grad, exp_avg, exp_avg_sq, step, active, lr, (b1, b2), eps)
        return z
    lr_t, lr_f = (lr.to(torch.float64), 0.0) if isinstance(lr, torch.Tensor) else (None, lr)
    with torch.no_grad():
        (step_kernel,) = _backends.kernels(OP, be)
        step_kernel(z, grad, exp_avg, exp_avg_sq, step, active, lr_t, lr_f, b1, b2, eps)
    return z
