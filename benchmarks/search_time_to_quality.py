"""Time to quality of the AnoGAN latent search: how many steps a search from an encoder's warm
start z0 = E(x) (f-AnoGAN) needs to reach the loss that a random start reaches after the full
500-step AnoGAN schedule.

It trains, quickly and on the CPU, a small DCGAN on real MNIST (../shared/data/mnist.npz,
28x28 padded to 32x32 with the background value, mapped to [-1, 1]), then an izi_f encoder
(f-AnoGAN: E trained with G and D frozen on |x - G(E(x))|² + κ |f(x) - f(G(E(x)))|²), then
searches held-out test digits twice with anomgan.scoring.search.latent_search (AnoGAN's schedule,
500 steps, λ = 0.1): from N(0, I) starts (seeded) and from E(x). The budget (seconds of
training) is a command-line option and is printed with the numbers.

Usage:
  python benchmarks/search_time_to_quality.py [--mnist PATH] [--gan-seconds 180]
         [--encoder-seconds 90] [--queries 64] [--seed 0] [--out result.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from anomgan.models.networks import Discriminator, Encoder, Generator  # noqa: E402
from anomgan.scoring.search import ANOGAN_STEPS, latent_search, prepare_frozen  # noqa: E402

_REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# ../shared beside the checkout (a worktree may sit one level deeper)
_CANDIDATES = [os.path.join(_REPO, *[".."] * up, "shared", "data", "mnist.npz") for up in (1, 2)]
DEFAULT_MNIST = next((os.path.normpath(p) for p in _CANDIDATES if os.path.exists(p)),
                     os.path.normpath(_CANDIDATES[0]))
Z_DIM, SIZE, WIDTH, MAX_WIDTH = 32, 32, 32, 128


def load_mnist(path: str):
    if not os.path.exists(path):
        raise SystemExit(f"MNIST not found at {path}: pass --mnist PATH (an npz with x_train, "
                         f"x_test uint8 N x 28 x 28)")
    with np.load(path) as f:
        xtr, xte = f["x_train"], f["x_test"]

    def prep(a):
        t = torch.from_numpy(a).float().div_(127.5).sub_(1.0)[:, None]  # [-1, 1]
        return F.pad(t, (2, 2, 2, 2), value=-1.0)                      # 28 -> 32, background

    return prep(xtr), prep(xte)


def _descend(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimizer step on ``loss``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def train_gan(xtr, seconds: float, batch: int, gen: torch.Generator):
    g = Generator(Z_DIM, SIZE, 1, width=WIDTH, max_width=MAX_WIDTH)
    d = Discriminator(SIZE, 1, width=WIDTH, max_width=MAX_WIDTH)
    og = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = F.binary_cross_entropy_with_logits
    t0, it = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        real = xtr[torch.randint(0, xtr.shape[0], (batch,), generator=gen)]
        fake = g(torch.randn(batch, Z_DIM, generator=gen))
        ld = bce(d(real), torch.ones(batch)) + bce(d(fake.detach()), torch.zeros(batch))
        _descend(od, ld)
        lg = bce(d(fake), torch.ones(batch))  # non-saturating generator loss
        _descend(og, lg)
        it += 1
        if it % 200 == 0:
            print(f"  gan it {it}: loss_d {ld.item():.3f} loss_g {lg.item():.3f}", flush=True)
    return g.eval(), d.eval(), it


def train_encoder(xtr, g, d, seconds: float, batch: int, gen: torch.Generator, kappa=1.0):
    e = Encoder(Z_DIM, SIZE, 1, width=WIDTH, max_width=MAX_WIDTH)
    fg, fd = prepare_frozen(g), prepare_frozen(d)
    opt = torch.optim.Adam(e.parameters(), lr=1e-4, betas=(0.5, 0.999))
    t0, it = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        x = xtr[torch.randint(0, xtr.shape[0], (batch,), generator=gen)]
        rec = fg(e(x))
        loss = F.mse_loss(rec, x) + kappa * F.mse_loss(fd.features(rec), fd.features(x))
        _descend(opt, loss)
        it += 1
        if it % 200 == 0:
            print(f"  encoder it {it}: izi_f loss {loss.item():.4f}", flush=True)
    return e.eval(), it


def first_reach(history: torch.Tensor, final: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per column: the first step count k (loss after k steps) with loss <= target; -1: never.
    history (S, B) holds the loss after 0 .. S-1 steps, final the loss after S steps."""
    curve = torch.cat([history, final[None]], 0)  # (S + 1, B): after 0 .. S steps
    ok = curve <= target[None]
    k = torch.where(ok.any(0), ok.float().argmax(0), torch.full_like(target, -1).long())
    return k.long()


def write_json(path: str, obj) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mnist", default=DEFAULT_MNIST)
    ap.add_argument("--gan-seconds", type=float, default=180.0)
    ap.add_argument("--encoder-seconds", type=float, default=90.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    xtr, xte = load_mnist(a.mnist)
    print(f"MNIST: {xtr.shape[0]} train, {xte.shape[0]} test; training a GAN for "
          f"{a.gan_seconds:.0f} s", flush=True)
    g, d, gan_its = train_gan(xtr, a.gan_seconds, a.batch, gen)
    print(f"GAN: {gan_its} iterations; training the izi_f encoder for {a.encoder_seconds:.0f} s",
          flush=True)
    e, enc_its = train_encoder(xtr, g, d, a.encoder_seconds, a.batch, gen)
    print(f"encoder: {enc_its} iterations", flush=True)

    x = xte[: a.queries]
    fg, fd = prepare_frozen(g), prepare_frozen(d)
    with torch.no_grad():
        z_enc = e(x)
    t0 = time.perf_counter()
    rnd = latent_search(fg, fd.features, x, seed=a.seed + 1, record_loss=True, reduction="sum")
    t_rnd = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = latent_search(fg, fd.features, x, z0=z_enc, record_loss=True, reduction="sum")
    t_warm = time.perf_counter() - t0

    target = rnd.loss                                    # per image: random start, 500 steps
    k_img = first_reach(warm.loss_history, warm.loss, target)
    mean_curve = torch.cat([warm.loss_history, warm.loss[None]], 0).mean(1)
    k_mean = int((mean_curve <= target.mean()).float().argmax()) if bool(
        (mean_curve <= target.mean()).any()) else -1
    reached = k_img[k_img >= 0]
    checkpoints = [0, 10, 50, 100, 200, 300, 499]
    res = {
        "what": "steps for an encoder warm start to reach the random-start loss after 500 steps",
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "seed": a.seed,
        "budget": {"gan_seconds": a.gan_seconds, "gan_iterations": gan_its,
                   "encoder_seconds": a.encoder_seconds, "encoder_iterations": enc_its,
                   "batch": a.batch, "z_dim": Z_DIM, "image": f"1x{SIZE}x{SIZE}"},
        "queries": a.queries, "search": f"AnoGAN schedule, {ANOGAN_STEPS} steps, lam 0.1, sum",
        "random_start_final_loss_mean": float(target.mean()),
        "warm_start_loss_at_step0_mean": float(warm.loss_history[0].mean()),
        "random_start_loss_at_step0_mean": float(rnd.loss_history[0].mean()),
        "warm_start_final_loss_mean": float(warm.loss.mean()),
        "images_reaching_target": int(reached.numel()),
        "steps_to_target_median": float(reached.median()) if reached.numel() else None,
        "steps_to_target_mean_curve": k_mean,
        "mean_loss_random_at": {k: float(rnd.loss_history[k].mean()) for k in checkpoints},
        "mean_loss_warm_at": {k: float(warm.loss_history[k].mean()) for k in checkpoints},
        "search_seconds": {"random": t_rnd, "warm": t_warm},
    }
    print(json.dumps(res, indent=2))
    if a.out:
        write_json(a.out, res)
    return res


if __name__ == "__main__":
    main()
