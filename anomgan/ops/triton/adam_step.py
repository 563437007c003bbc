"""Triton kernel of adam_step_ (contract: anomgan/ops/adam_step.py).

Algorithm. One program per sample (grid (B,)), so the sample's step count is read and written
by one program only (no race). An inactive sample's program returns having written nothing.
An active one increments its step t, forms beta^t by binary exponentiation in float64 (only
multiplications: no libdevice pow), the bias corrections 1 - beta1^t and sqrt(1 - beta2^t) and
the step size lr / (1 - beta1^t) in float64, then walks the D elements in BLOCKs with
torch.optim.Adam's element arithmetic in z's dtype (lerp and addcmul as fused multiply-adds,
IEEE-rounded sqrt and divisions). Nothing is read back to the host: capturable in a CUDA graph.
Memory traffic: reads z, grad and both moments once and writes z and the moments once
(7·B·D elements for the active samples), plus B steps, flags and learning rates.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _sqrt(a, IS_F64: tl.constexpr):
    """IEEE-rounded square root (tl.sqrt on float32 is an approximation on a GPU)."""
    if IS_F64:
        return tl.sqrt(a)
    else:
        return tl.sqrt_rn(a)


@triton.jit
def _div(a, b, IS_F64: tl.constexpr):
    """IEEE-rounded division (float32 '/' is an approximation on a GPU)."""
    if IS_F64:
        return a / b
    else:
        return tl.div_rn(a, b)


@triton.jit
def _adam(z_ptr, g_ptr, m_ptr, v_ptr, step_ptr, act_ptr, lr_ptr, D,
          zs0, zs1, gs0, gs1, ms0, ms1, vs0, vs1, ss, acs, ls,
          lr: tl.float64, beta1: tl.float64, beta2: tl.float64, eps: tl.float64,
          HAS_LR: tl.constexpr, W1_SMALL: tl.constexpr, BLOCK: tl.constexpr, NBLOCKS: tl.constexpr,
          T: tl.constexpr, IS_F64: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    if tl.load(act_ptr + b * acs) != 0:
        t = tl.load(step_ptr + b * ss) + 1
        tl.store(step_ptr + b * ss, t)
        # beta^t by binary exponentiation
        p1 = tl.full((), 1.0, tl.float64)
        p2 = tl.full((), 1.0, tl.float64)
        zero = tl.zeros((), tl.float64)  # scalars as float64 values (plain floats when interpreted)
        be1 = beta1 + zero
        be2 = beta2 + zero
        q1 = be1
        q2 = be2
        e = t
        while e > 0:
            odd = (e % 2) == 1
            p1 = tl.where(odd, p1 * q1, p1)
            p2 = tl.where(odd, p2 * q2, p2)
            q1 = q1 * q1
            q2 = q2 * q2
            e = e // 2
        bc1 = 1.0 - p1
        bc2_sqrt = tl.sqrt(1.0 - p2)  # float64: IEEE-rounded
        if HAS_LR:
            lr_b = tl.load(lr_ptr + b * ls).to(tl.float64)
        else:
            lr_b = lr + zero
        neg_step = (-(lr_b / bc1)).to(T)
        bc2s = bc2_sqrt.to(T)
        w1 = (1.0 - be1).to(T)
        b2 = be2.to(T)
        w2 = (1.0 - be2).to(T)
        eps_t = (eps + zero).to(T)
        lanes = tl.arange(0, BLOCK)
        for k in range(0, NBLOCKS):
            offs = k * BLOCK + lanes
            mask = offs < D
            gr = tl.load(g_ptr + b * gs0 + offs * gs1, mask=mask, other=0.0)
            m_old = tl.load(m_ptr + b * ms0 + offs * ms1, mask=mask, other=0.0)
            v_old = tl.load(v_ptr + b * vs0 + offs * vs1, mask=mask, other=0.0)
            z_old = tl.load(z_ptr + b * zs0 + offs * zs1, mask=mask, other=0.0)
            if W1_SMALL:  # torch's lerp: the formula depends on the weight
                m = tl.fma(w1 + tl.zeros_like(gr), gr - m_old, m_old)
            else:
                m = tl.fma(-(1.0 - w1) + tl.zeros_like(gr), gr - m_old, gr)
            v = tl.fma(w2 * gr, gr, v_old * b2)
            denom = _div(_sqrt(v, IS_F64), bc2s + tl.zeros_like(v), IS_F64) + eps_t
            z = z_old + _div(neg_step * m, denom, IS_F64)
            tl.store(m_ptr + b * ms0 + offs * ms1, m, mask=mask)
            tl.store(v_ptr + b * vs0 + offs * vs1, v, mask=mask)
            tl.store(z_ptr + b * zs0 + offs * zs1, z, mask=mask)


def adam_step_(z, grad, exp_avg, exp_avg_sq, step, active, lr_tensor, lr, beta1, beta2, eps):
    """In place; arguments validated by the front (anomgan.ops.adam_step_). lr_tensor: None or
    (B,) float64."""
    B, D = z.shape
    if B == 0:
        return
    has_lr = lr_tensor is not None
    lrt = lr_tensor if has_lr else step  # not read when HAS_LR is False
    block = min(1024, triton.next_power_of_2(max(D, 1)))
    _adam[(B,)](z, grad, exp_avg, exp_avg_sq, step, active, lrt, D,
                z.stride(0), z.stride(1), grad.stride(0), grad.stride(1),
                exp_avg.stride(0), exp_avg.stride(1), exp_avg_sq.stride(0), exp_avg_sq.stride(1),
                step.stride(0), active.stride(0), lrt.stride(0),
                float(lr), float(beta1), float(beta2), float(eps),
                HAS_LR=has_lr, W1_SMALL=abs(1.0 - beta1) < 0.5,
                BLOCK=block, NBLOCKS=triton.cdiv(D, block),
                T=tl.float64 if z.dtype == torch.float64 else tl.float32,
                IS_F64=z.dtype == torch.float64)
