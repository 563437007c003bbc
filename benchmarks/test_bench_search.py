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
               channels_last, frozen), fused ops from the fastest available backend, float32.
  search-bf16  the same with compute_dtype=torch.bfloat16 (G and f under CPU autocast during
               the steps; the returned loss recomputed in float32): what the detector runs
               (ScoringConfig.search_precision="auto") on a CPU with native bfloat16
               instructions (avx512_bf16 / AMX; the header line says whether this one has them).

Tried and dropped (interleaved single-thread comparisons in one process, RESULTS.md):
torch.compile of the whole step's forward (the convolutions stay oneDNN calls: no gain, 35-40 s
of compile time), contiguous (not channels_last) weights (1.7x slower).

Detector throughput at 64x64x3 (test_bench_detector_old_vs_new_default): a noisy-gan detector
(default networks, encoder warm start) with the old default (500 search steps, float32) beside
the new default ScoringConfig() in one run, images/s. The 500-step time is t(0) + 500 * (t(K) -
t(0)) / K from K = ANOMGAN_BENCH_OLD_STEPS (default 20) timed steps (a step's cost does not
depend on the step); ANOMGAN_BENCH_OLD_STEPS=500 times the whole search instead.

Reported: the median time per round, per-step ms and images/s (extra_info), and at the end the
ratio loop / each. The CPU is shared with other work: the numbers are noisy.

Run:  python -m pytest benchmarks/test_bench_search.py --benchmark-only
      (one thread, as the published numbers: OMP_NUM_THREADS=1 ... -p no:randomly)
"""
import os
import platform
import time

import pytest
import torch

from anomgan.models.networks import Discriminator, Generator
from anomgan.scoring.search import cpu_has_native_bf16, latent_search, plain_search_loop, prepare_frozen

STEPS = int(os.environ.get("ANOMGAN_BENCH_SEARCH_STEPS", "10"))
OLD_STEPS = int(os.environ.get("ANOMGAN_BENCH_OLD_STEPS", "20"))
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


def _bench(benchmark, label, fn):
    fn(1)  # warm-up: allocator, oneDNN primitive caches
    benchmark.group = f"latent search cpu DCGAN-64 B={BATCH}, {STEPS} steps/round"
    benchmark.pedantic(fn, args=(STEPS,), rounds=3, warmup_rounds=0, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once, untimed (the checks still ran)
        return
    med = benchmark.stats.stats.median
    _MEDIANS[label] = med
    benchmark.extra_info.update(role="search", label=label, reference="loop",
                                ms_per_step=1e3 * med / STEPS, images_per_s=BATCH * STEPS / med,
                                steps=STEPS, batch=BATCH, threads=torch.get_num_threads(),
                                cpu=platform.processor() or platform.machine())


def test_bench_plain_loop(benchmark, setup):
    g, d, x, z0 = setup
    g.requires_grad_(True), d.requires_grad_(True)
    _bench(benchmark, "loop", lambda n: plain_search_loop(g, d, x, z0, n))


def test_bench_plain_loop_frozen_params(benchmark, setup):
    g, d, x, z0 = setup
    g.requires_grad_(False), d.requires_grad_(False)
    try:
        _bench(benchmark, "loop-frozen", lambda n: plain_search_loop(g, d, x, z0, n))
    finally:
        g.requires_grad_(True), d.requires_grad_(True)


def test_bench_latent_search(benchmark, setup, summary_line):
    g, d, x, z0 = setup
    fg, fd = prepare_frozen(g), prepare_frozen(d)
    # time only a right answer: 3 steps land where the plain loop's do. (Not element for element:
    # Adam's first steps move every coordinate by ~lr whatever the gradient's size, so a
    # near-zero gradient component whose sign differs by rounding moves the other way.)
    ref = plain_search_loop(g, d, x, z0, 3)
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
    _report(summary_line)


def test_bench_latent_search_bf16(benchmark, setup, summary_line):
    g, d, x, z0 = setup
    fg, fd = prepare_frozen(g), prepare_frozen(d)
    # a right answer: the float32 loss at the z that 3 bf16-computed steps reach is the plain
    # loop's to 1 % (the z differ by the rounding of the gradients' directions)
    ref = plain_search_loop(g, d, x, z0, 3)
    res = latent_search(fg, fd.features, x, z0=z0, steps=3, lr=0.01, reduction="sum",
                        compute_dtype=torch.bfloat16)
    with torch.no_grad():
        gz = g(ref)
        ref_loss = 0.9 * (x - gz).abs().flatten(1).sum(1) + 0.1 * (
            d.features(x) - d.features(gz)).abs().flatten(1).sum(1)
    torch.testing.assert_close(res.loss, ref_loss, rtol=1e-2, atol=0.0)
    _bench(benchmark, "search-bf16", lambda n: latent_search(
        fg, fd.features, x, z0=z0, steps=n, lr=0.01, reduction="sum", compute_dtype=torch.bfloat16))
    _report(summary_line)


_REPORTED = set()


def _report(write):
    """The summary lines of the search timings not written yet (each with its ratio to the
    plain loop)."""
    if "loop" not in _MEDIANS:
        return
    if not _REPORTED:
        write(f"CPU native bfloat16 (avx512_bf16 / AMX-BF16): {cpu_has_native_bf16()}, "
              f"{torch.get_num_threads()} thread(s)")
    for label, med in _MEDIANS.items():
        if label in _REPORTED:
            continue
        _REPORTED.add(label)
        write(f"latent search {label:12s}: {1e3 * med / STEPS:8.1f} ms/step, "
              f"{BATCH * STEPS / med:7.1f} image-steps/s, "
              f"{BATCH * STEPS / med / 500:6.3f} images/s at 500 steps; "
              f"plain loop / this: {_MEDIANS['loop'] / med:5.2f}x")


def _detector(scoring):
    from anomgan.detector import Detector
    from anomgan.models import get_method

    torch.manual_seed(0)
    m = get_method("noisy-gan")(SIZE, CH)       # the default networks: z 100, widths 512..64
    m.encoder_trained.fill_(True)               # scored as a trained detector: E(x) warm start
    return Detector(m, scoring=scoring)


def _seconds(det, x, rounds=3):
    det.score_tensor(x[:2])  # warm-up: frozen copies, oneDNN primitives
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        det.score_tensor(x)
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def test_bench_detector_old_vs_new_default(benchmark, summary_line):
    """images/s of a 64x64x3 noisy-gan detector: the old default (500 steps, float32) and the
    new default ScoringConfig(), one run (module doc)."""
    from anomgan.scoring.config import ScoringConfig

    x = torch.rand(BATCH, CH, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    new_cfg = ScoringConfig(batch_size=BATCH)
    new = _detector(new_cfg)
    benchmark.group = f"noisy-gan detector 64x64x3, {BATCH} images"
    benchmark.pedantic(new.score_tensor, args=(x,), rounds=3, warmup_rounds=1, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: no timing, so no old-vs-new ratio
        return
    t_new = benchmark.stats.stats.median
    old = _detector(ScoringConfig(search_steps=OLD_STEPS, search_precision="float32",
                                  batch_size=BATCH))
    t_k = _seconds(old, x, rounds=1 if OLD_STEPS > 50 else 3)
    t0 = _seconds(_detector(ScoringConfig(search_steps=0, search_precision="float32",
                                               batch_size=BATCH)), x)
    t_old = t_k if OLD_STEPS == 500 else t0 + 500 * (t_k - t0) / OLD_STEPS
    how = "timed" if OLD_STEPS == 500 else f"from {OLD_STEPS} timed steps"
    benchmark.extra_info.update(new_images_per_s=BATCH / t_new, old_images_per_s=BATCH / t_old,
                                speedup=t_old / t_new, new_search_steps=new_cfg.search_steps,
                                threads=torch.get_num_threads())
    summary_line(f"noisy-gan detector 64x64x3, batch {BATCH}, {torch.get_num_threads()} "
                 f"thread(s): old default (500 steps, float32; {how}) {BATCH / t_old:.3f} "
                 f"images/s; new default ({new_cfg.search_steps} steps, "
                 f"{new_cfg.search_precision}) {BATCH / t_new:.2f} images/s: "
                 f"{t_old / t_new:.0f}x")
