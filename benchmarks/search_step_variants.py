"""Interleaved single-thread comparison of latent-search step variants in one process (what the
choices in anomgan.scoring.search were made on; RESULTS.md).

DCGAN G and D for 64x64x3 (z 100, widths 512..64, eval mode, DCGAN init), AnoGAN loss (sum,
λ = 0.1), lr 0.01. Each round runs every variant in turn, so a variant never gets a quieter
machine than another; a variant's time per step is its marginal one, (t(1 + steps) - t(1)) /
steps, so the once-per-search work (f(x), the final float32 score) is not counted; the median
over --rounds rounds is reported, per step and per image, with the plain loop's time per image
divided by each variant's.

  plain loop                   autograd on the plain loss (weight gradients too), torch.optim.Adam
  search fp32                  latent_search on prepare_frozen copies (BatchNorm folded,
                               channels_last), float32
  ... no channels_last         contiguous weights
  ... no BN folding            BatchNorm kept (eval mode)
  search bf16                  compute_dtype=torch.bfloat16 (CPU autocast during the steps)
  search bf16 B=16 / B=256     the same at other batch sizes (batching restarts and tiles into
                               one call only pays if image-steps/s grow with the batch)
  compile (--compile)          torch.compile of the step's whole forward (G, f and the fused
                               loss), its backward by AOTAutograd; float32 and bf16, beside the
                               same step function run eagerly ("eager step")

    OMP_NUM_THREADS=1 python benchmarks/search_step_variants.py [--rounds 5] [--compile]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from anomgan import ops  # noqa: E402
from anomgan.models.networks import Discriminator, Generator  # noqa: E402
from anomgan.scoring.search import cpu_has_native_bf16, latent_search, prepare_frozen  # noqa: E402

SIZE, CH, ZDIM = 64, 3, 100


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="search steps per variant and round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="add the torch.compile variants")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g, d = Generator(ZDIM, SIZE, CH).eval(), Discriminator(SIZE, CH).eval()
    gen = torch.Generator().manual_seed(1)
    X = torch.rand(256, CH, SIZE, SIZE, generator=gen) * 2 - 1
    Z0 = torch.randn(256, ZDIM, generator=gen)

    def plain(n, B=64):
        x, z0 = X[:B], Z0[:B]
        with torch.no_grad():
            fx = d.features(x)
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.01)
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            gz = g(z)
            loss = (0.9 * (x - gz).abs().flatten(1).sum(1)
                    + 0.1 * (fx - d.features(gz)).abs().flatten(1).sum(1))
            loss.sum().backward()
            opt.step()

    fg, fd = prepare_frozen(g), prepare_frozen(d)
    fg_c, fd_c = prepare_frozen(g, channels_last=False), prepare_frozen(d, channels_last=False)
    fg_nf, fd_nf = prepare_frozen(g, fold_bn=False), prepare_frozen(d, fold_bn=False)

    def search(n, G=fg, D=fd, B=64, cd=None):
        latent_search(G, D.features, X[:B], z0=Z0[:B], steps=n, lr=0.01, reduction="sum",
                      compute_dtype=cd)

    bf = torch.bfloat16
    variants = {
        "plain loop": (64, lambda n: plain(n)),
        "search fp32": (64, lambda n: search(n)),
        "search fp32 no channels_last": (64, lambda n: search(n, fg_c, fd_c)),
        "search fp32 no BN folding": (64, lambda n: search(n, fg_nf, fd_nf)),
        "search bf16": (64, lambda n: search(n, cd=bf)),
        "search bf16 no channels_last": (64, lambda n: search(n, fg_c, fd_c, cd=bf)),
        "search bf16 B=16": (16, lambda n: search(n, B=16, cd=bf)),
        "search bf16 B=256": (256, lambda n: search(n, B=256, cd=bf)),
    }
    if args.compile:
        x = X[:64]
        fx = fd.features(x).detach()

        def whole_step(bf16, compiled=True):
            def loss_fn(z):
                with torch.autocast("cpu", dtype=bf, enabled=bf16):
                    gz = fg(z)
                    fgz = fd.features(gz)
                return ops.residual_fm_loss(x, gz.float(), fx, fgz.float(), lam=0.1,
                                            reduction="sum")
            return torch.compile(loss_fn, dynamic=False) if compiled else loss_fn

        def stepper(loss_fn):
            def run(n):
                z = Z0[:64].clone()
                for _ in range(n):
                    zz = z.detach().requires_grad_(True)
                    with torch.enable_grad():
                        (gr,) = torch.autograd.grad(loss_fn(zz).sum(), zz)
                    z = z - 0.01 * gr.sign()
            return run

        variants["eager step fp32"] = (64, stepper(whole_step(False, False)))
        variants["eager step bf16"] = (64, stepper(whole_step(True, False)))
        variants["compiled step fp32"] = (64, stepper(whole_step(False)))
        variants["compiled step bf16"] = (64, stepper(whole_step(True)))
    for _, f in variants.values():
        f(1)  # warm-up (and compilation)
    times = {k: [] for k in variants}
    for _ in range(args.rounds):
        for k, (_, f) in variants.items():
            t0 = time.perf_counter()
            f(1)
            t1 = time.perf_counter()
            f(1 + args.steps)
            times[k].append(((time.perf_counter() - t1) - (t1 - t0)) / args.steps)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    ref = med["plain loop"] / 64
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU native bfloat16 "
          f"(avx512_bf16 / AMX-BF16): {cpu_has_native_bf16()}; marginal time per step, median of "
          f"{args.rounds} rounds of 1 and {1 + args.steps} steps")
    for k, (B, _) in variants.items():
        m = med[k]
        print(f"{k:30s} B={B:3d} {1e3 * m:8.1f} ms/step {B / m:7.1f} image-steps/s  "
              f"plain loop / this (per image) {ref / (m / B):5.2f}x")
    return med


if __name__ == "__main__":
    main()
