"""Triton kernels of patch_topn_l1 (contract: anomgan/ops/patch_topn_l1.py).

Algorithm. Let g = gcd(patch, stride), r = patch/g, q = stride/g. Every window is an r x r
square of g x g pixel blocks whose top-left block is (i*q, j*q), so:
  forward  1. _block_sums: one pass over x and y; each program sums |x - y| over channels and
              g x g blocks for a tile of blocks of one image (blocks that only gaps between
              windows cover, when stride > patch, are not read) -> S (B, Hb, Wb).
           2. _windows: window sums from S, (r x r loads per window when r <= 2, i.e. the
              usual stride | patch with patch <= 2*stride; otherwise separably, a row pass
              S -> (B, Hb, Wp) then a column pass), scaled by 1/(C*patch^2) into patch_map.
              The same pass keeps each program's n best windows (n rounds of "largest value,
              lowest index, after the previous pick"; ties to the lowest flat index; float32
              packs value bits and index into one int64 key, one reduction a round): it writes
              the score and top_idx directly when one program covers an image, else a short
              candidate list per program that 3. _merge reduces per image. n > 32: the map is
              written by the kernels and the top n taken by a stable sort in the launcher.
  backward 1. _cover: per g x g block, the sum over the windows covering it of
              g_map + g_scores/n*[window selected], scaled by 1/(C*patch^2) (direct, or
              separably when more than 2 window rows/cols cover a block) -> Wt (B, H/g, W/g).
           2. _grad: grad_y = sign(y - x) * Wt[block], one pass over x, y and grad_y.
Memory traffic (elements): forward reads x and y once (2*B*C*H*W; less when gaps skip
pixels), writes B*Hb*Wb block sums (1/g^2 of a pixel plane per image) and reads them back
r^2 times from cache, writes the map; backward reads x, y once, writes grad_y once, plus
planes of B*H*W/g^2. Accumulation: float32 (float64 for float64 inputs). Many images per
launch: every grid is (tiles of an image) x (images), flattened on axis 0; the window passes
split an image over several programs only while the batch alone leaves SMs idle.
Loop bounds are constexpr or `while` loops: Triton 3.6's interpreter cannot range() over an
int argument under numpy 2.x.
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from .._poison import new_output

_NP_MAX = 32  # largest n selected inside the kernels (next power of two); beyond: torch sort
_WINDOW_BLOCK = 1024  # windows per chunk of the _windows / _cover programs


# ----------------------------------------------------------------------------- kernels

@triton.jit
def _abs_diff(xp, yp, rows, xsh, ysh, mask, ACC: tl.constexpr):
    """|x - y| of one pixel row per block row, converted to ACC right after loading."""
    xv = tl.load(xp + rows * xsh, mask=mask, other=0.0).to(ACC)
    yv = tl.load(yp + rows * ysh, mask=mask, other=0.0).to(ACC)
    return tl.abs(xv - yv)


@triton.jit
def _image_tile(n_rows, n_cols):
    """(image b, tile row, tile column) of this program in a grid of images x (n_rows x n_cols
    tiles), flattened on axis 0 (an image's tiles consecutive, row-major)."""
    pid = tl.program_id(0)
    per_img = n_rows * n_cols
    b = (pid // per_img).to(tl.int64)
    t = pid % per_img
    ti = t // n_cols
    return b, ti, t - ti * n_cols


@triton.jit
def _block_sums(x_ptr, y_ptr, s_ptr, Hb, Wb, n_tr, n_tc, Q, R,
                xsb, xsc, xsh, ysb, ysc, ysh,
                C: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, TR: tl.constexpr,
                TC: tl.constexpr, ACC: tl.constexpr):
    """S[b, I, J] = sum over c and the G x G block (I, J) of |x - y|; a TR x TC block tile."""
    b, ti, tj = _image_tile(n_tr, n_tc)
    I = ti * TR + tl.arange(0, TR)  # block rows
    kk = tl.arange(0, TC * GP)  # lanes along a pixel row: TC blocks of GP (>= G) columns
    J = tj * TC + kk // GP
    if GP == G:
        col = tj * (TC * G) + kk
        col_ok = J < Wb
    else:
        dx = kk % GP
        col = J * G + dx
        col_ok = (J < Wb) & (dx < G)
    row_ok = (I < Hb) & ((I % Q) < R)  # blocks in the gaps between windows are not read
    col_ok = col_ok & ((J % Q) < R)
    mask = row_ok[:, None] & col_ok[None, :]
    rows0 = I.to(tl.int64) * G
    xb = x_ptr + b * xsb + col[None, :]
    yb = y_ptr + b * ysb + col[None, :]
    acc = tl.zeros([TR, TC * GP], dtype=ACC)
    for c in range(C):
        if G <= 8:  # unrolled: all G row loads of a channel in flight at once
            for dy in tl.static_range(G):
                acc += _abs_diff(xb + c * xsc, yb + c * ysc, (rows0 + dy)[:, None], xsh, ysh,
                                 mask, ACC)
        else:
            for dy in range(G):
                acc += _abs_diff(xb + c * xsc, yb + c * ysc, (rows0 + dy)[:, None], xsh, ysh,
                                 mask, ACC)
    bs = tl.sum(tl.reshape(acc, [TR, TC, GP]), axis=2)
    Jo = tj * TC + tl.arange(0, TC)
    out = s_ptr + b * Hb * Wb + I[:, None] * Wb + Jo[None, :]
    tl.store(out, bs, mask=(I < Hb)[:, None] & (Jo < Wb)[None, :])


@triton.jit
def _topn_merge(v, idx, ok, best_v, best_i, slot, N: tl.constexpr):
    """The N best of (v[ok], idx[ok]) and (best_v, best_i) in the order (value desc, index
    asc), by N rounds of "the best after the previous pick"; values are >= 0 or NaN (never
    picked: ok excludes them), invalid entries carry index BIG = 2^31 - 1."""
    BIG: tl.constexpr = 2147483647
    if best_v.dtype == tl.float32:
        # one int64 key per entry, ordered as (value desc, index asc): the bits of a float
        # >= +0 order like the float, and BIG - index orders indices reversed; then a round
        # is one max-reduction (invalid entries: key -1)
        v = v + 0.0  # no -0.0 (its sign bit would make the key negative)
        key = tl.where(ok & (v == v), (v.to(tl.int32, bitcast=True).to(tl.int64) << 32)
                       | (BIG - idx).to(tl.int64), -1)
        bkey = tl.where(best_i != BIG, (best_v.to(tl.int32, bitcast=True).to(tl.int64) << 32)
                        | (BIG - best_i).to(tl.int64), -1)
        pk = tl.full([], 9223372036854775807, tl.int64)
        newk = tl.full(best_i.shape, -1, tl.int64)
        for k in tl.static_range(N):
            pk = tl.maximum(tl.max(tl.where(key < pk, key, -1), axis=0),
                            tl.max(tl.where(bkey < pk, bkey, -1), axis=0))
            newk = tl.where(slot == k, pk, newk)
        got = newk >= 0
        new_v = tl.where(got, (newk >> 32).to(tl.int32).to(tl.float32, bitcast=True),
                         float("-inf"))
        new_i = tl.where(got, BIG - (newk & 0xFFFFFFFF).to(tl.int32), BIG)
        return new_v, new_i
    new_v = tl.full(best_v.shape, float("-inf"), best_v.dtype)
    new_i = tl.full(best_i.shape, BIG, tl.int32)
    pv = tl.full([], float("inf"), best_v.dtype)  # the previous pick: +inf, index -1
    pi = tl.full([], -1, tl.int32)
    bok = best_i != BIG
    for k in tl.static_range(N):
        ec = ok & ((v < pv) | ((v == pv) & (idx > pi)))
        cv = tl.max(tl.where(ec, v, float("-inf")), axis=0)
        ci = tl.min(tl.where(ec & (v == cv), idx, BIG), axis=0)
        eb = bok & ((best_v < pv) | ((best_v == pv) & (best_i > pi)))
        bv = tl.max(tl.where(eb, best_v, float("-inf")), axis=0)
        bi = tl.min(tl.where(eb & (best_v == bv), best_i, BIG), axis=0)
        take_b = (bv > cv) | ((bv == cv) & (bi < ci))
        pv = tl.where(take_b, bv, cv)
        pi = tl.where(take_b, bi, ci)
        new_v = tl.where(slot == k, pv, new_v)
        new_i = tl.where(slot == k, pi, new_i)
    return new_v, new_i


@triton.jit
def _finish(best_v, best_i, slot, nan_seen, N: tl.constexpr, score_ptr, idx_ptr, b):
    """scores[b] = mean of the n best, top_idx[b] = their indices; NaN image: NaN, 0..n-1."""
    sel = slot < N
    score = tl.sum(tl.where(sel, best_v, 0.0), axis=0) / N
    score = tl.where(nan_seen, float("nan"), score)
    idx = tl.where(nan_seen, slot, best_i).to(tl.int64)
    tl.store(score_ptr + b, score)
    tl.store(idx_ptr + b * N + slot, idx, mask=sel)


@triton.jit
def _chunk(t, chunks, ch, ar, L, V, BLOCK: tl.constexpr):
    """Chunk ch of tile t, which walks `chunks` chunks of BLOCK outputs of a flat plane of L =
    U x V outputs (ar = arange(BLOCK)): flat indices k, their in-range mask, row u, column v."""
    k = (t * chunks + ch) * BLOCK + ar
    u = k // V
    return k, k < L, u, k - u * V


@triton.jit
def _windows(src_ptr, out_ptr, cand_v_ptr, cand_i_ptr, score_ptr, idx_ptr,
             U, V, src_sb, src_sr, den, tiles, chunks,
             QH: tl.constexpr, RH: tl.constexpr, QW: tl.constexpr, RW: tl.constexpr,
             N: tl.constexpr, BLOCK: tl.constexpr, NP: tl.constexpr, SELECT: tl.constexpr,
             FINAL: tl.constexpr, ACC: tl.constexpr):
    """out[b, u, v] = sum_{a<RH, c<RW} src[b, u*QH + a, v*QW + c] / den for the flat range of
    `chunks` chunks of BLOCK outputs of tile t; with SELECT, also the n best of that range."""
    BIG: tl.constexpr = 2147483647
    pid = tl.program_id(0)
    b = (pid // tiles).to(tl.int64)
    t = pid % tiles
    L = U * V
    ar = tl.arange(0, BLOCK)
    slot = tl.arange(0, NP)
    best_v = tl.full([NP], float("-inf"), ACC)
    best_i = tl.full([NP], BIG, tl.int32)
    nan_lanes = tl.zeros([BLOCK], dtype=tl.int32)  # reduced once, after the chunks
    src_b = src_ptr + b * src_sb
    ch = 0
    while ch < chunks:
        k, ok, u, vv = _chunk(t, chunks, ch, ar, L, V, BLOCK)
        ch += 1
        acc = tl.zeros([BLOCK], dtype=ACC)
        for a in tl.static_range(RH):
            row = src_b + (u * QH + a).to(tl.int64) * src_sr + vv * QW
            for c in tl.static_range(RW):
                acc += tl.load(row + c, mask=ok, other=0.0).to(ACC)
        m = acc / den  # den: an int (a float argument would be fp32 on a GPU)
        tl.store(out_ptr + b * L + k, m, mask=ok)
        if SELECT:
            nan_lanes = nan_lanes | (ok & (m != m)).to(tl.int32)
            best_v, best_i = _topn_merge(m, k, ok, best_v, best_i, slot, N)
    if SELECT:
        nan_seen = tl.max(nan_lanes, axis=0) > 0
        if FINAL:
            _finish(best_v, best_i, slot, nan_seen, N, score_ptr, idx_ptr, b)
        else:
            best_v = tl.where(nan_seen, float("nan"), best_v)
            cb = (b * tiles + t) * NP + slot
            tl.store(cand_v_ptr + cb, best_v)
            tl.store(cand_i_ptr + cb, best_i)


@triton.jit
def _merge(cand_v_ptr, cand_i_ptr, score_ptr, idx_ptr, M,
           N: tl.constexpr, BLOCK: tl.constexpr, NP: tl.constexpr, ACC: tl.constexpr):
    """Per image: the n best of its M candidates (value, index) -> scores, top_idx."""
    BIG: tl.constexpr = 2147483647
    b = tl.program_id(0).to(tl.int64)
    ar = tl.arange(0, BLOCK)
    slot = tl.arange(0, NP)
    best_v = tl.full([NP], float("-inf"), ACC)
    best_i = tl.full([NP], BIG, tl.int32)
    nan_lanes = tl.zeros([BLOCK], dtype=tl.int32)
    k0 = 0
    while k0 < M:
        k = k0 + ar
        k0 += BLOCK
        inb = k < M
        v = tl.load(cand_v_ptr + b * M + k, mask=inb, other=float("-inf"))
        i = tl.load(cand_i_ptr + b * M + k, mask=inb, other=BIG)
        nan_lanes = nan_lanes | (inb & (v != v)).to(tl.int32)
        best_v, best_i = _topn_merge(v, i, inb & (i != BIG), best_v, best_i, slot, N)
    _finish(best_v, best_i, slot, tl.max(nan_lanes, axis=0) > 0, N, score_ptr, idx_ptr, b)


@triton.jit
def _cover(src_ptr, out_ptr, gs_ptr, tidx_ptr, U, V, SH, SW,
           src_sb, src_sh, src_sw, gs_s, t_sb, t_sn,
           den, n, tiles, chunks,
           QH: tl.constexpr, RH: tl.constexpr, CH: tl.constexpr,
           QW: tl.constexpr, RW: tl.constexpr, CW: tl.constexpr, BLOCK: tl.constexpr,
           NP: tl.constexpr, SELECTED: tl.constexpr, ACC: tl.constexpr):
    """out[b, u, v] = 1/den * sum over src cells (i, j) whose window covers (u, v) of
    src[b, i, j] (+ gs[b]/n if SELECTED and i*SW + j is in top_idx[b]); (i, j) covers (u, v)
    when i*QH <= u < i*QH + RH and j*QW <= v < j*QW + RW (at most CH x CW cells)."""
    pid = tl.program_id(0)
    b = (pid // tiles).to(tl.int64)
    t = pid % tiles
    L = U * V
    ar = tl.arange(0, BLOCK)
    src_b = src_ptr + b * src_sb
    if SELECTED:
        slot = tl.arange(0, NP)
        sel = tl.load(tidx_ptr + b * t_sb + slot * t_sn, mask=slot < n, other=-1)
        g_add = tl.load(gs_ptr + b * gs_s).to(ACC) / n
    ch = 0
    while ch < chunks:
        k, ok, u, vv = _chunk(t, chunks, ch, ar, L, V, BLOCK)
        ch += 1
        acc = tl.zeros([BLOCK], dtype=ACC)
        for a in tl.static_range(CH):
            i = u // QH - a
            ok_i = ok & (i >= 0) & (i < SH) & (u < i * QH + RH)
            for c in tl.static_range(CW):
                j = vv // QW - c
                okc = ok_i & (j >= 0) & (j < SW) & (vv < j * QW + RW)
                val = tl.load(src_b + i.to(tl.int64) * src_sh + j * src_sw, mask=okc,
                              other=0.0).to(ACC)
                if SELECTED:
                    hit = (i * SW + j).to(tl.int64)[:, None] == sel[None, :]
                    val += g_add * tl.sum(hit.to(ACC), axis=1)
                acc += tl.where(okc, val, 0.0)
        tl.store(out_ptr + b * L + k, acc / den, mask=ok)


@triton.jit
def _grad(x_ptr, y_ptr, w_ptr, g_ptr, H, W, HB, WB, n_th, n_tw,
          xsb, xsc, xsh, ysb, ysc, ysh,
          C: tl.constexpr, G: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
          ACC: tl.constexpr):
    """grad[b, c, h, w] = sign(y - x) * Wt[b, h // G, w // G] for a TH x TW pixel tile."""
    b, th, tw = _image_tile(n_th, n_tw)
    h = th * TH + tl.arange(0, TH)
    w = tw * TW + tl.arange(0, TW)
    inb = (h < H)[:, None] & (w < W)[None, :]
    wt = tl.load(w_ptr + b * HB * WB + (h // G)[:, None] * WB + (w // G)[None, :], mask=inb,
                 other=0.0)
    hh = h.to(tl.int64)[:, None]
    xo = x_ptr + b * xsb + hh * xsh + w[None, :]
    yo = y_ptr + b * ysb + hh * ysh + w[None, :]
    go = g_ptr + b * C * H * W + hh * W + w[None, :]
    for c in range(C):
        # (a mask on wt != 0 would skip uncovered pixels but stop vectorised loads)
        xv = tl.load(xo + c * xsc, mask=inb, other=0.0).to(ACC)
        yv = tl.load(yo + c * ysc, mask=inb, other=0.0).to(ACC)
        d = yv - xv
        sgn = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))
        tl.store(go + c * H * W, (sgn * wt).to(g_ptr.dtype.element_ty), mask=inb)


# ----------------------------------------------------------------------------- launchers

def _acc(dtype):
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


@functools.lru_cache(maxsize=None)
def _target_programs(device: torch.device) -> int:
    """Programs that keep the device busy (4 per SM); a fixed guess off-GPU."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 512


def _geometry(patch, stride):
    g = math.gcd(patch, stride)
    return g, patch // g, stride // g  # g, r, q


def _tiling(L, B, device):
    """(block, tiles, chunks) of a _windows or _cover launch over B planes of L outputs each:
    chunks of `block` outputs, `tiles` programs per plane, each walking `chunks` chunks. A
    plane is split over several programs only while the batch alone leaves SMs idle."""
    block = min(_WINDOW_BLOCK, max(16, triton.next_power_of_2(L)))
    n_chunks = triton.cdiv(L, block)
    tiles = min(n_chunks, max(1, triton.cdiv(_target_programs(device), B)))
    chunks = triton.cdiv(n_chunks, tiles)
    return block, triton.cdiv(n_chunks, chunks), chunks


def _launch_windows(src, out, U, V, QH, RH, QW, RW, den, acc_tl, select=None):
    """out (B, U, V) from src (B, *, *) contiguous; select=(n, NP, scores, top_idx)."""
    B = out.shape[0]
    block, tiles, chunks = _tiling(U * V, B, out.device)
    geo = dict(QH=QH, RH=RH, QW=QW, RW=RW, BLOCK=block, ACC=acc_tl, num_warps=4)
    if select is None:
        _windows[(B * tiles,)](src, out, out, out, out, out, U, V, src.stride(0), src.stride(1),
                               den, tiles, chunks, N=1, NP=2, SELECT=False, FINAL=False, **geo)
        return
    n, NP, scores, top_idx = select
    if tiles == 1:
        _windows[(B,)](src, out, out, out, scores, top_idx, U, V, src.stride(0), src.stride(1),
                       den, 1, chunks, N=n, NP=NP, SELECT=True, FINAL=True, **geo)
        return
    cand_v = new_output((B, tiles, NP), dtype=out.dtype, device=out.device)
    cand_i = new_output((B, tiles, NP), dtype=torch.int32, device=out.device)
    _windows[(B * tiles,)](src, out, cand_v, cand_i, scores, top_idx, U, V, src.stride(0),
                           src.stride(1), den, tiles, chunks, N=n, NP=NP, SELECT=True,
                           FINAL=False, **geo)
    M = tiles * NP
    _merge[(B,)](cand_v, cand_i, scores, top_idx, M, N=n,
                 BLOCK=min(1024, triton.next_power_of_2(M)), NP=NP, ACC=acc_tl, num_warps=4)


def forward(x, y, patch, stride, n):
    """(scores (B,), patch_map (B, Hp, Wp), top_idx (B, n) int64) of x, y (B, C, H, W) with a
    unit-stride last dim (other strides arbitrary); arguments validated by the front."""
    assert x.shape == y.shape and x.dim() == 4 and x.dtype == y.dtype
    assert x.stride(3) == 1 or x.shape[3] == 1
    assert y.stride(3) == 1 or y.shape[3] == 1
    B, C, H, W = x.shape
    Hp, Wp = (H - patch) // stride + 1, (W - patch) // stride + 1
    od, acc_tl = _acc(x.dtype)
    dev = x.device
    scores = new_output((B,), dtype=od, device=dev)
    pmap = new_output((B, Hp, Wp), dtype=od, device=dev)
    top_idx = new_output((B, n), dtype=torch.int64, device=dev)
    if B == 0:
        return scores, pmap, top_idx
    g, r, q = _geometry(patch, stride)
    Hb, Wb = ((Hp - 1) * stride + patch) // g, ((Wp - 1) * stride + patch) // g
    # 1. block sums
    GP = triton.next_power_of_2(g)
    TCG = max(GP, 128)
    TC = TCG // GP
    TR = max(1, min(64 // GP, 2048 // TCG))
    n_tr, n_tc = triton.cdiv(Hb, TR), triton.cdiv(Wb, TC)
    S = new_output((B, Hb, Wb), dtype=od, device=dev)
    _block_sums[(B * n_tr * n_tc,)](x, y, S, Hb, Wb, n_tr, n_tc, q, r,
                                     x.stride(0), x.stride(1), x.stride(2),
                                     y.stride(0), y.stride(1), y.stride(2),
                                     C=C, G=g, GP=GP, TR=TR, TC=TC, ACC=acc_tl, num_warps=4)
    # 2. windows (+ top n)
    den = C * patch * patch  # window sum -> mean
    NP = max(2, triton.next_power_of_2(n))
    select = (n, NP, scores, top_idx) if NP <= _NP_MAX else None
    if r <= 2:
        _launch_windows(S, pmap, Hp, Wp, q, r, q, r, den, acc_tl, select)
    else:
        rows = new_output((B, Hb, Wp), dtype=od, device=dev)
        _launch_windows(S, rows, Hb, Wp, 1, 1, q, r, 1, acc_tl)
        _launch_windows(rows, pmap, Hp, Wp, q, r, 1, 1, den, acc_tl, select)
    if select is None:  # large n: stable sort keeps ties in index order
        flat = pmap.view(B, Hp * Wp)
        order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :n]
        has_nan = torch.isnan(flat).any(dim=1, keepdim=True)
        order = torch.where(has_nan, torch.arange(n, device=dev).expand(B, n), order)
        top_idx.copy_(order)
        sc = flat.gather(1, order).mean(dim=1)
        scores.copy_(torch.where(has_nan.squeeze(1), torch.full_like(sc, float("nan")), sc))
    return scores, pmap, top_idx


def backward(g_scores, g_map, x, y, top_idx, patch, stride):
    """grad_y (contiguous, y's dtype) = sign(y - x)/(C*patch^2) * sum over the windows covering
    each pixel of (g_map + g_scores/n if the window is in top_idx)."""
    assert x.shape == y.shape and x.dim() == 4
    B, C, H, W = x.shape
    n = top_idx.shape[1]
    Hp, Wp = (H - patch) // stride + 1, (W - patch) // stride + 1
    assert g_map.shape == (B, Hp, Wp) and g_scores.shape == (B,) and top_idx.shape[0] == B
    od, acc_tl = _acc(y.dtype)
    dev = y.device
    grad = new_output(tuple(y.shape), dtype=y.dtype, device=dev)
    if B == 0 or grad.numel() == 0:
        return grad
    g, r, q = _geometry(patch, stride)
    HB, WB = triton.cdiv(H, g), triton.cdiv(W, g)
    NP = max(2, triton.next_power_of_2(n))
    if NP <= _NP_MAX:
        src, selected = g_map, True
    else:  # large n: the score's share added by a scatter
        src = g_map.to(od).clone(memory_format=torch.contiguous_format)
        add = (g_scores.to(od) / n).unsqueeze(1).expand(B, n)
        src.view(B, Hp * Wp).scatter_add_(1, top_idx, add)
        selected = False
    den = C * patch * patch
    cr = triton.cdiv(r, q)  # window rows (cols) covering a block, at most
    wt = new_output((B, HB, WB), dtype=od, device=dev)
    if cr <= 2:
        _launch_cover(src, wt, g_scores, top_idx, HB, WB, Hp, Wp, q, r, cr, q, r, cr, den,
                      n, NP, selected, acc_tl)
    else:
        cols = new_output((B, HB, Wp), dtype=od, device=dev)
        _launch_cover(src, cols, g_scores, top_idx, HB, Wp, Hp, Wp, q, r, cr, 1, 1, 1, 1,
                      n, NP, selected, acc_tl)
        _launch_cover(cols, wt, g_scores, top_idx, HB, WB, HB, Wp, 1, 1, 1, q, r, cr, den,
                      n, NP, False, acc_tl)
    TH, TW = 16, 128
    n_th, n_tw = triton.cdiv(H, TH), triton.cdiv(W, TW)
    _grad[(B * n_th * n_tw,)](x, y, wt, grad, H, W, HB, WB, n_th, n_tw,
                              x.stride(0), x.stride(1), x.stride(2),
                              y.stride(0), y.stride(1), y.stride(2),
                              C=C, G=g, TH=TH, TW=TW, ACC=acc_tl, num_warps=4)
    return grad


def _launch_cover(src, out, g_scores, top_idx, U, V, SH, SW, QH, RH, CH, QW, RW, CW, den,
                  n, NP, selected, acc_tl):
    B = out.shape[0]
    block, tiles, chunks = _tiling(U * V, B, out.device)
    _cover[(B * tiles,)](src, out, g_scores, top_idx, U, V, SH, SW,
                         src.stride(0), src.stride(1), src.stride(2), g_scores.stride(0),
                         top_idx.stride(0), top_idx.stride(1),
                         den, n, tiles, chunks, QH=QH, RH=RH, CH=CH, QW=QW, RW=RW, CW=CW,
                         BLOCK=block, NP=NP, SELECTED=selected, ACC=acc_tl, num_warps=4)
