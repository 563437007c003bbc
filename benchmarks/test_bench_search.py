"""Latent search (AnoGAN inference) against the plain PyTorch loop, same networks, same CPU run.

Networks: anomgan.models.networks DCGAN at 64x64x3 (z_dim 100, widths 512-256-128-64), eval
mode, DCGAN initialisation (timing does not depend on training). Batch 64 queries. Each round
runs STEPS search iterations (the default 10; ANOMGAN_BENCH_SEARCH_STEPS changes it) from the
same starts.

  loop         the plain loop a user would write: networks in eval mode, per-sample loss with
               torch ops, loss.sum().backward(), torch.optim.Adam on z (parameters keep
               requires_grad, so autograd also computes weight gradients).
  loop-frozen  the same loop with every parameter's requires_grad off (a careful user).
  search       anomgan.scoring.search.latent_search on prepare_frozen copies (BatchNorm folded,
               channels_last, frozen), fused ops from the fastest available backend.

Reported: the median time per round, per-step ms and images/s (extra_info), and at the end the
ratio loop / search. The CPU is shared with other work: the numbers are noisy.

Run:  python -m pytest benchmarks/test_bench_search.py --benchmark-only
"""
import os
import platform

import pytest
import torch

from anomgan.models.networks import Discriminator, Generator
from anomgan.scoring.search import latent_search, prepare_frozen

STEPS = int(os.environ.get("ANOMGAN_BENCH_SEARCH_STEPS", "10"))
BATCH, SIZE, CH, ZDIM = 64, 64, 3, 100
_MEDIANS = {}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    g = Generator(ZDIM, SIZE, CH).eval()
    d = Discriminator(SIZE, CH).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(BATCH, CH, SIZE, SIZE, generator=gen) * 2 - 1
    z0 = torch.randn(BATCH, ZDIM, generator=gen)
    return g, d, x, z0


def _plain_loop(g, d, x, z0, steps, lam=0.1):
    with torch.no_grad():
        fx = d.features(x)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.01)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        gz = g(z)
        loss = ((1 - lam) * (x - gz).abs().flatten(1).sum(1)
                + lam * (fx - d.features(gz)).abs().flatten(1).sum(1))
        loss.sum().backward()
        opt.step()
    return z.detach()


def _bench(benchmark, label, fn):
    fn(1)  # warm-up: allocator, oneDNN primitive caches
    benchmark.group = f"latent search cpu DCGAN-64 B={BATCH}, {STEPS} steps/round"
    benchmark.pedantic(fn, args=(STEPS,), rounds=3, warmup_rounds=0, iterations=1)
    med = benchmark.stats.stats.median
    _MEDIANS[label] = med
    benchmark.extra_info.update(ms_per_step=1e3 * med / STEPS, images_per_s=BATCH * STEPS / med,
                                steps=STEPS, batch=BATCH, threads=torch.get_num_threads(),
                                cpu=platform.processor() or platform.machine())


def test_bench_plain_loop(benchmark, setup):
    g, d, x, z0 = setup
    g.requires_grad_(True), d.requires_grad_(True)
    _bench(benchmark, "loop", lambda n: _plain_loop(g, d, x, z0, n))


def test_bench_plain_loop_frozen_params(benchmark, setup):
    g, d, x, z0 = setup
    g.requires_grad_(False), d.requires_grad_(False)
    try:
        _bench(benchmark, "loop-frozen", lambda n: _plain_loop(g, d, x, z0, n))
    finally:
        g.requires_grad_(True), d.requires_grad_(True)


def test_bench_latent_search(benchmark, setup, request):
    g, d, x, z0 = setup
    fg, fd = prepare_frozen(g), prepare_frozen(d)
    # time only a right answer: 3 steps land where the plain loop's do. (Not element for element:
    # Adam's first steps move every coordinate by ~lr whatever the gradient's size, so a
    # near-zero gradient component whose sign differs by rounding moves the other way.)
    ref = _plain_loop(g, d, x, z0, 3)
    res = latent_search(fg, fd.features, x, z0=z0, steps=3, lr=0.01, reduction="sum")
    close = ((res.z - ref).abs() <= 1e-4 + 1e-3 * ref.abs()).float().mean()
    assert close > 0.99, f"only {close:.2%} of z agrees with the plain loop"
    with torch.no_grad():
        gz = g(ref)
        ref_loss = 0.9 * (x - gz).abs().flatten(1).sum(1) + 0.1 * (
            d.features(x) - d.features(gz)).abs().flatten(1).sum(1)
    torch.testing.assert_close(res.loss, ref_loss, rtol=1e-3, atol=1e-2)
    _bench(benchmark, "search", lambda n: latent_search(fg, fd.features, x, z0=z0, steps=n,
                                                        lr=0.01, reduction="sum"))
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line("")
        for label, med in _MEDIANS.items():
            ratio = _MEDIANS[label] / _MEDIANS["search"]
            tr.write_line(f"latent search {label:12s}: {1e3 * med / STEPS:8.1f} ms/step, "
                          f"{BATCH * STEPS / med:7.1f} image-steps/s, "
                          f"{BATCH * STEPS / med / 500:6.3f} images/s at 500 steps; "
                          f"time / search's: {ratio:5.2f}x")
