"""GPU self-test of patch_topn_l1's cuda and triton backends (run on a CUDA machine).

    FORCE_CUDA=1 pip install --no-build-isolation .   # from the repo root, CUDA torch
    python benchmarks/gpu_check_patch_topn_l1.py [--no-timing]

Every check compares a backend with an independent float64 oracle (unfold + stable sort,
gradient by autograd) on fresh random inputs: odd shapes, both CUDA kernel paths (stride
divides patch / general), every dtype, non-contiguous and misaligned inputs, ties, NaN,
large n, gradients. Kernel outputs are poisoned (NaN / sentinel) so unwritten elements fail.
Prints one row per check and a warm/cold-L2 timing table; exits 1 if any check fails.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import traceback

import torch
import torch.nn.functional as F

import anomgan
from anomgan.ops import _backends, patch_topn_l1
from anomgan.ops._poison import poisoned_outputs
from anomgan.ops.patch_topn_l1 import SUPPORTED

DEV = "cuda"
ROWS: list[tuple[str, str, str, str]] = []


def oracle(x, y, p, s, n, g_scores=None, g_map=None):
    """float64 (scores, map, top_idx, grad_y) on x's device."""
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


def tols(dtype):
    fwd = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)
    grad = {torch.float64: dict(rtol=1e-9, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-7)}.get(
        dtype, dict(rtol=1e-2, atol=1e-4))
    return fwd, grad


def record(backend, name, fn):
    try:
        fn()
        ROWS.append((backend, name, "PASS", ""))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:160]
        ROWS.append((backend, name, "FAIL", msg))
        traceback.print_exc(limit=3, file=sys.stderr)


def check_against_oracle(backend, x, y, p, s, n, gen, check_idx=False):
    dtype = x.dtype
    fwd_tol, grad_tol = tols(dtype)
    y = y.detach().requires_grad_(True)
    scores, pmap = patch_topn_l1(x, y, patch=p, stride=s, n=n, backend=backend)
    od = torch.float64 if dtype == torch.float64 else torch.float32
    assert scores.dtype == od and pmap.dtype == od and scores.device.type == "cuda"
    g_s = torch.randn(scores.shape, generator=gen, dtype=torch.float64).to(DEV)
    g_m = torch.randn(pmap.shape, generator=gen, dtype=torch.float64).to(DEV)
    ref_s, ref_m, ref_i, ref_g = oracle(x, y, p, s, n, g_s, g_m)
    torch.testing.assert_close(pmap.double(), ref_m, **fwd_tol)
    torch.testing.assert_close(scores.double(), ref_s, equal_nan=True, **fwd_tol)
    loss = (scores * g_s.to(od)).sum() + (pmap * g_m.to(od)).sum()
    (grad,) = torch.autograd.grad(loss, y)
    assert grad.dtype == dtype and grad.shape == y.shape
    torch.testing.assert_close(grad.double(), ref_g, **grad_tol)
    if check_idx and backend == "cuda":
        xx = x if x.stride(-1) == 1 else x.contiguous()
        yy = y.detach() if y.stride(-1) == 1 else y.detach().contiguous()
        _, _, idx = torch.ops.anomgan.patch_topn_l1_fwd(xx, yy, p, s, n)
        assert torch.equal(idx.cpu(), ref_i.cpu()), f"top_idx {idx[:2].tolist()} != {ref_i[:2].tolist()}"


CASES = [  # (B, C, H, W, patch, stride, n)
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
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def run_checks(backend):
    gen = torch.Generator().manual_seed(1234)

    def rand(shape, dtype):
        return torch.rand(shape, generator=gen, dtype=torch.float64).to(DEV, dtype)

    for case in CASES:
        B, C, H, W, p, s, n = case
        for dtype in DTYPES:
            if H * W > 10**6 and dtype == torch.float64:
                continue
            name = f"{'x'.join(map(str, case))} {str(dtype)[6:]}"
            record(backend, name, lambda: check_against_oracle(
                backend, rand((B, C, H, W), dtype), rand((B, C, H, W), dtype), p, s, n, gen,
                check_idx=dtype == torch.float64))

    def layouts():
        bx, by = rand((3, 3, 70, 90), torch.float32), rand((3, 3, 70, 90), torch.float32)
        yield "sliced (misaligned)", bx[:, :, 3:60:2, 1:], by[:, :, 1:58:2, :-1]
        yield "channels_last", bx.contiguous(memory_format=torch.channels_last), by.contiguous(
            memory_format=torch.channels_last)
        yield "transposed", bx.transpose(2, 3), by.transpose(2, 3)
        yield "expanded batch", bx[:1].expand(3, -1, -1, -1), by
        hx, hy = bx.half(), by.half()
        yield "fp16 sliced odd offset", hx[:, 1:, :, 3:], hy[:, :2, :, 2:89]
    for lname, x, y in layouts():
        for p, s, n in ((8, 4, 2), (5, 3, 2)):
            record(backend, f"{lname} p{p}s{s}", lambda x=x, y=y, p=p, s=s, n=n: check_against_oracle(
                backend, x, y, p, s, n, gen))

    def ties():
        x = torch.zeros(2, 1, 24, 24, device=DEV)
        y = torch.full((2, 1, 24, 24), 0.25, device=DEV)
        y[1, 0, 0:8, 16:24] = 1.0
        y[1, 0, 16:24, 0:8] = 1.0
        check_against_oracle(backend, x, y, 8, 8, 1, gen, check_idx=True)
        check_against_oracle(backend, x, y, 8, 8, 9, gen, check_idx=True)  # all windows
        check_against_oracle(backend, x, y, 8, 4, 3, gen, check_idx=True)
    record(backend, "ties -> lowest index", ties)

    def equal_pixels():
        x = rand((2, 2, 33, 35), torch.float32)
        y = x.clone().requires_grad_(True)
        scores, _ = patch_topn_l1(x, y, patch=4, stride=4, n=2, backend=backend)
        (g,) = torch.autograd.grad(scores.sum(), y)
        assert scores.abs().max().item() == 0.0 and torch.count_nonzero(g).item() == 0
    record(backend, "x == y: zero score and gradient", equal_pixels)

    def nan():
        x, y = rand((3, 1, 64, 64), torch.float32), rand((3, 1, 64, 64), torch.float32)
        x[1, 0, 5, 7] = float("nan")
        x[2, 0, 63, 63] = float("nan")  # the last pixel of the last window
        scores, _ = patch_topn_l1(x, y, backend=backend)
        assert torch.isnan(scores[1]) and torch.isnan(scores[2]) and not torch.isnan(scores[0])
        ref_s, _, _, _ = oracle(x[:1], y[:1], 16, 8, 3)
        torch.testing.assert_close(scores[:1].double(), ref_s, rtol=2e-5, atol=1e-6)
        x2, y2 = rand((1, 1, 70, 70), torch.float32), rand((1, 1, 70, 70), torch.float32)
        x2[0, 0, 69, 69] = float("nan")  # columns/rows 64..69 are in no 16/8 window
        s2, _ = patch_topn_l1(x2, y2, backend=backend)
        assert not torch.isnan(s2).any()
        if backend == "cuda":
            _, _, idx = torch.ops.anomgan.patch_topn_l1_fwd(x, y, 16, 8, 3)
            assert idx[1].tolist() == [0, 1, 2], idx[1].tolist()
    record(backend, "NaN image -> NaN score only there", nan)

    def grad_x():
        x, y = rand((2, 2, 20, 23), torch.float64), rand((2, 2, 20, 23), torch.float64)
        x.requires_grad_(True)
        y.requires_grad_(True)
        sc, pm = patch_topn_l1(x, y, patch=6, stride=2, n=2, backend=backend)
        gx, gy = torch.autograd.grad(sc.sum() + pm.sum(), (x, y))
        torch.testing.assert_close(gx, -gy)
        y2 = rand((2, 2, 9, 11), torch.float64).requires_grad_(True)
        x2 = rand((2, 2, 9, 11), torch.float64)
        assert (x2 - y2).abs().min() > 1e-4
        assert torch.autograd.gradcheck(lambda yy: patch_topn_l1(x2, yy, patch=4, stride=3, n=2,
                                                                 backend=backend), (y2,),
                                         eps=1e-6, atol=1e-7)
    record(backend, "grad_x = -grad_y, gradcheck fp64", grad_x)


def timing(backends):
    """Median ms of forward+backward (warm L2) and forward (cold L2: 512 MB written between)."""
    flush = torch.empty(512 * 2**20, dtype=torch.uint8, device=DEV)

    def ms(fn, cold, reps=20):
        times = []
        for _ in range(reps):
            if cold:
                flush.zero_()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        return sorted(times)[len(times) // 2]

    print(f"\ntiming on {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; patch 16 stride 8 n 3")
    print(f"{'shape':>22} {'dtype':>9} {'backend':>7} {'fwd warm ms':>11} {'fwd cold ms':>11} "
          f"{'GB/s cold':>9} {'fwd+bwd ms':>10}")
    for shape, dtype in (((32, 1, 1024, 1024), torch.float32), ((32, 3, 1024, 1024), torch.float16),
                         ((2, 1, 1024, 1024), torch.float32), ((256, 3, 256, 256), torch.bfloat16)):
        x = torch.rand(shape, device=DEV, dtype=dtype)
        y = torch.rand(shape, device=DEV, dtype=dtype).requires_grad_(True)
        nbytes = 2 * x.numel() * x.element_size()
        for be in ["torch"] + backends:
            try:
                with torch.no_grad():
                    fwd = lambda: patch_topn_l1(x, y, backend=be)  # noqa: E731
                    fwd()
                    warm, cold = ms(fwd, False), ms(fwd, True)

                def fb():
                    sc, pm = patch_topn_l1(x, y, backend=be)
                    torch.autograd.grad(sc.sum() + pm.sum(), y)
                fb()
                both = ms(fb, False, reps=10)
                print(f"{str(shape):>22} {str(dtype)[6:]:>9} {be:>7} {warm:11.3f} {cold:11.3f} "
                      f"{nbytes / cold / 1e6:9.0f} {both:10.3f}")
            except Exception as exc:  # noqa: BLE001
                print(f"{str(shape):>22} {str(dtype)[6:]:>9} {be:>7} failed: {exc}"[:200])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    print(f"anomgan from {anomgan.__file__}; extension built with CUDA: "
          f"{_backends.extension_built_with_cuda()}; SUPPORTED = {SUPPORTED}")
    ran = []
    with poisoned_outputs():
        for be in ("cuda", "triton"):
            why = _backends.why_unavailable(be, "cuda")
            if why is None and be not in SUPPORTED:
                why = f"patch_topn_l1 has no {be} backend in this tree"
            if why:
                ROWS.append((be, "(all)", "SKIP", why))
                continue
            ran.append(be)
            run_checks(be)
    width = max(len(r[1]) for r in ROWS)
    print(f"\n{'backend':8} {'check':{width}} result")
    for be, name, res, msg in ROWS:
        print(f"{be:8} {name:{width}} {res} {msg}")
    fails = sum(r[2] == "FAIL" for r in ROWS)
    print(f"\n{sum(r[2] == 'PASS' for r in ROWS)} passed, {fails} failed, "
          f"{sum(r[2] == 'SKIP' for r in ROWS)} skipped")
    if not args.no_timing and ran:
        timing(ran)
    sys.exit(1 if fails or not ran else 0)


if __name__ == "__main__":
    main()
