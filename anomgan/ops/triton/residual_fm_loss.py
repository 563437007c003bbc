"""Triton kernels of residual_fm_loss (contract: anomgan/ops/residual_fm_loss.py).

Algorithm. Each sample's pairs (x, gz) and (fx, fgz) are cut into chunks of up to
CHUNK_BLOCKS x BLOCK elements; one launch covers every (sample, pair, chunk), flattened on
grid axis 0 (the x chunks first, then the f chunks).
  forward  1. _partials: a program sums |a - b| over its chunk in BLOCK lanes (float32; float64
              for float64 inputs), tree-reduces the lanes and writes one partial (B, cx + cf).
           2. _combine: one program per sample sums its x and f partials and writes
              wr * r + wf * f (in float64, then the output dtype).
  backward _sign_scale: one program per (sample, pair, BLOCK) writes
           scale[b] * sign(b - a) (sign(0) = 0) with scale = g * wr (or g * wf) in float64,
           computed by the launcher.
Memory traffic (elements): forward reads the four inputs once (2·B·(N + M)) and writes
B·(cx + cf) partials + B losses; backward reads them once and writes grad_gz and grad_fgz
once (B·(N + M)).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._backends import out_dtype
from .._poison import new_output

_BLOCK = 1024  # elements per program step (fewer for tiny samples)
_CHUNK_BLOCKS = 16  # forward: BLOCKs per program


@triton.jit
def _pair_item(pid, B, nx, nf, x_ptr, gz_ptr, fx_ptr, fgz_ptr, sx, sgz, sfx, sfgz, N, M):
    """The work item of program ``pid`` of a grid flattened over (pair, sample, piece): the
    B*nx pieces of the (x, gz) pair first (nx per sample), then the B*nf of (fx, fgz). Returns
    (b, piece, a_ptr, b_ptr, n): the sample, the piece of its pair, pointers at the sample's
    rows of the pair and their length. Both kernels cut their grid so."""
    if pid < B * nx:
        b = (pid // nx).to(tl.int64)
        k = pid % nx
        a_ptr = x_ptr + b * sx
        b_ptr = gz_ptr + b * sgz
        n = N
    else:
        q = pid - B * nx
        b = (q // nf).to(tl.int64)
        k = q % nf
        a_ptr = fx_ptr + b * sfx
        b_ptr = fgz_ptr + b * sfgz
        n = M
    return b, k, a_ptr, b_ptr, n


@triton.jit
def _partials(x_ptr, gz_ptr, fx_ptr, fgz_ptr, part_ptr, N, M, cx, cf, B,
              sx, sgz, sfx, sfgz, CHUNK_BLOCKS: tl.constexpr, BLOCK: tl.constexpr,
              ACC: tl.constexpr):
    pid = tl.program_id(0)
    per = cx + cf
    b, c, a_ptr, b_ptr, n = _pair_item(pid, B, cx, cf, x_ptr, gz_ptr, fx_ptr, fgz_ptr,
                                       sx, sgz, sfx, sfgz, N, M)
    slot = tl.where(pid < B * cx, c, cx + c)
    start = c.to(tl.int64) * (CHUNK_BLOCKS * BLOCK)
    lanes = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=ACC)
    for k in range(0, CHUNK_BLOCKS):
        offs = start + k * BLOCK + lanes
        mask = offs < n
        av = tl.load(a_ptr + offs, mask=mask, other=0.0).to(ACC)
        bv = tl.load(b_ptr + offs, mask=mask, other=0.0).to(ACC)
        acc += tl.abs(av - bv)
    tl.store(part_ptr + b * per + slot, tl.sum(acc, axis=0))


@triton.jit
def _combine(part_ptr, loss_ptr, cx, cf, wr: tl.float64, wf: tl.float64, PB: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    row = part_ptr + b * (cx + cf)
    offs = tl.arange(0, PB)
    r = tl.sum(tl.load(row + offs, mask=offs < cx, other=0.0).to(tl.float64), axis=0)
    f = tl.sum(tl.load(row + cx + offs, mask=offs < cf, other=0.0).to(tl.float64), axis=0)
    loss = r * wr + f * wf
    tl.store(loss_ptr + b, loss.to(loss_ptr.dtype.element_ty))


@triton.jit
def _sign_scale(x_ptr, gz_ptr, fx_ptr, fgz_ptr, sr_ptr, sf_ptr, ggz_ptr, gfgz_ptr, N, M, bx, bf,
                B, sx, sgz, sfx, sfgz, BLOCK: tl.constexpr, ACC: tl.constexpr):
    pid = tl.program_id(0)
    b, k, a_ptr, b_ptr, n = _pair_item(pid, B, bx, bf, x_ptr, gz_ptr, fx_ptr, fgz_ptr,
                                       sx, sgz, sfx, sfgz, N, M)
    if pid < B * bx:
        o_ptr = ggz_ptr + b * N
        scale = tl.load(sr_ptr + b).to(ACC)
    else:
        o_ptr = gfgz_ptr + b * M
        scale = tl.load(sf_ptr + b).to(ACC)
    offs = k.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    av = tl.load(a_ptr + offs, mask=mask, other=0.0).to(ACC)
    bv = tl.load(b_ptr + offs, mask=mask, other=0.0).to(ACC)
    d = bv - av
    sign = (d > 0).to(ACC) - (d < 0).to(ACC)  # 0 for ties and NaN
    tl.store(o_ptr + offs, (scale * sign).to(o_ptr.dtype.element_ty), mask=mask)


def _geometry(x, fx):
    B = x.shape[0]
    N, M = x.shape[1:].numel(), fx.shape[1:].numel()
    block = min(_BLOCK, triton.next_power_of_2(max(N, M)))
    return B, N, M, block


def _weights(N, M, lam, reduction):
    if reduction == "mean":
        return (1.0 - lam) / N, lam / M
    return 1.0 - lam, lam


def _acc(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def forward(x, gz, fx, fgz, lam, reduction):
    """Loss (B,). Inputs: each sample's elements contiguous (any batch stride), validated by the
    front (anomgan.ops.residual_fm_loss)."""
    B, N, M, block = _geometry(x, fx)
    od = out_dtype(x.dtype)
    loss = new_output((B,), dtype=od, device=x.device)
    if B == 0:
        return loss
    chunk_blocks = min(_CHUNK_BLOCKS, triton.cdiv(max(N, M), block))
    chunk = chunk_blocks * block
    cx, cf = triton.cdiv(N, chunk), triton.cdiv(M, chunk)
    part = torch.empty((B, cx + cf), dtype=od, device=x.device)
    _partials[(B * (cx + cf),)](x, gz, fx, fgz, part, N, M, cx, cf, B, x.stride(0), gz.stride(0),
                                fx.stride(0), fgz.stride(0), CHUNK_BLOCKS=chunk_blocks,
                                BLOCK=block, ACC=_acc(x.dtype))
    wr, wf = _weights(N, M, lam, reduction)
    _combine[(B,)](part, loss, cx, cf, wr, wf, PB=triton.next_power_of_2(max(cx, cf)))
    return loss


def backward(g, x, gz, fx, fgz, lam, reduction):
    """(grad_gz, grad_fgz), contiguous, in the inputs' dtype; g: (B,) loss gradient."""
    B, N, M, block = _geometry(x, fx)
    ggz = new_output(gz.shape, dtype=gz.dtype, device=gz.device)
    gfgz = new_output(fgz.shape, dtype=fgz.dtype, device=fgz.device)
    if B == 0:
        return ggz, gfgz
    wr, wf = _weights(N, M, lam, reduction)
    g64 = g.to(torch.float64)
    sr, sf = g64 * wr, g64 * wf
    bx, bf = triton.cdiv(N, block), triton.cdiv(M, block)
    _sign_scale[(B * (bx + bf),)](x, gz, fx, fgz, sr, sf, ggz, gfgz, N, M, bx, bf, B,
                                  x.stride(0), gz.stride(0), fx.stride(0), fgz.stride(0),
                                  BLOCK=block, ACC=_acc(x.dtype))
    return ggz, gfgz
