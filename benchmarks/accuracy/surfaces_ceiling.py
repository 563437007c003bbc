"""How much of the surfaces benchmark can a segmenter learn at all? (issue #13, diagnostic)

The ORACLE: the library's defect segmenter network (``anomgan.scoring.segmenter.SegNet``, same
width, focal loss, Adam with cosine decay, batch, steps and crop size as the chosen surfaces
configuration) trained on the benchmark's OWN planted defects, with their true masks
(``surfaces.plant`` on random crops of the texture's training region, half of each batch
defective), which no user has: it knows the defect kinds, sizes and amplitude range exactly.
The CONTROL: the same network and loop with the library's generic blob generator
(``synthetic_anomalies``), what ``train(segmenter=...)`` learns from. Both are scored on the
split's validation crops (whole 128-px crops, the image score the mean of the 50 largest map
values, as the chosen configuration's patch 1 / n 50), never on test. Also scored ("train-region"):
crops planted the same way but cut from the TRAINING region, texture the network has seen: no generalisation across the photograph is needed there, so it bounds what the pixels of
this texture allow at all.

If the oracle falls short of a goal, the goal is out of reach for this network and budget on
this texture whatever generator is used: the planted defects are not separable from the
texture in the pixels. Per-defect rows: the validation crops with a single defect, the pixel
AUROC of its mask against all normal crops' pixels, by kind and |amplitude| band.

    python benchmarks/accuracy/surfaces_ceiling.py --texture grass --generator oracle --seed 0 \\
        [--width 16 --steps 3000 --bf16] [--out results.jsonl]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import surfaces  # noqa: E402
from anomgan.scoring import metrics  # noqa: E402
from anomgan.scoring.segmenter import SegNet, net_input, synthetic_anomalies  # noqa: E402

BANDS = ((0.15, "0.08-0.15"), (0.25, "0.15-0.25"), (math.inf, "0.25-0.41"))
TOP_N = 50


def batch(generator: str, region: np.ndarray, n: int, size: int, rng: np.random.Generator,
          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (n, 1, size, size) in [0, 1] with defects in half the crops, masks (n, size, size) float)."""
    x = surfaces.crops(region, n, rng, size)
    if generator == "oracle":
        planted = [surfaces.plant(c, rng) if i % 2 == 0 else (c, np.zeros(c.shape, bool), [])
                   for i, c in enumerate(x)]
        return (torch.from_numpy(np.stack([p[0] for p in planted]))[:, None],
                torch.from_numpy(np.stack([p[1] for p in planted])).float())
    pool = torch.from_numpy(surfaces.crops(region, n, rng, size))[:, None]
    return synthetic_anomalies(torch.from_numpy(x)[:, None], pool, gen)


def train(generator: str, texture: str, seed: int, *, width: int, steps: int, size: int,
          batch_size: int, bf16: bool) -> SegNet:
    region = surfaces.regions(surfaces.texture(texture))["train"]
    rng, gen = np.random.default_rng(1000 + seed), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SegNet(1, width)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)))
    net.train()
    for _ in range(steps):
        xs, m = batch(generator, region, batch_size, size, rng, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(net_input(xs, None)).float()
        bce = F.binary_cross_entropy_with_logits(logits, m, reduction="none")
        p = torch.sigmoid(logits)
        loss = ((1 - torch.where(m > 0, p, 1 - p)) ** 2 * bce).mean()  # focal, gamma 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def train_region_split(texture: str, seed: int) -> dict:
    """Validation-shaped crops (VAL normal + VAL planted, masks, kinds) cut from the training
    region, with their own random stream."""
    rng = np.random.default_rng([seed, 2000])
    region = surfaces.regions(surfaces.texture(texture))["train"]
    normal = surfaces.crops(region, surfaces.VAL, rng)
    planted = [surfaces.plant(c, rng) for c in surfaces.crops(region, surfaces.VAL, rng)]
    n = surfaces.VAL
    return {"val": torch.from_numpy(np.concatenate([normal, np.stack([p[0] for p in planted])]))[:, None],
            "val_masks": np.concatenate([np.zeros(normal.shape, bool), np.stack([p[1] for p in planted])]),
            "val_labels": np.array([0] * n + [1] * n), "val_kinds": [[]] * n + [p[2] for p in planted]}


def per_defect(maps: np.ndarray, split: dict) -> dict[str, list]:
    labels, masks, kinds = split["val_labels"], split["val_masks"], split["val_kinds"]
    normal = maps[labels == 0].ravel()
    rows: dict[str, list[float]] = {}
    for i in np.flatnonzero(labels == 1):
        if len(kinds[i]) != 1:
            continue
        kind, amp = kinds[i][0]["kind"], abs(kinds[i][0]["amplitude"])
        band = next(name for top, name in BANDS if amp < top)
        pos = maps[i][masks[i]]
        y = np.r_[np.zeros(normal.size), np.ones(pos.size)]
        rows.setdefault(f"{kind} {band}", []).append(metrics.roc_auc(y, np.r_[normal, pos]))
    return {k: [round(float(np.mean(v)), 3), len(v)] for k, v in sorted(rows.items())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texture", default="grass", choices=surfaces.TEXTURES)
    p.add_argument("--generator", default="oracle", choices=("oracle", "blobs"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--size", type=int, default=64, help="training crop size (the chosen tile)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (fast on AMX CPUs)")
    p.add_argument("--out", default=None, help="append the result as one JSON line")
    a = p.parse_args(argv)
    t0 = time.time()
    net = train(a.generator, a.texture, a.seed, width=a.width, steps=a.steps, size=a.size,
                batch_size=a.batch_size, bf16=a.bf16)
    res = {"texture": a.texture, "seed": a.seed, "generator": a.generator, "width": a.width,
           "steps": a.steps, "size": a.size, "batch_size": a.batch_size, "bf16": a.bf16,
           "train_seconds": round(time.time() - t0, 1)}
    for name, split in (("val", surfaces.make_split(a.texture, a.seed)),
                        ("train-region", train_region_split(a.texture, a.seed))):
        with torch.no_grad():
            maps = torch.sigmoid(net(net_input(split["val"], None))).numpy()
        scores = np.sort(maps.reshape(len(maps), -1), 1)[:, -TOP_N:].mean(1)
        res[name] = {"image_auroc": metrics.roc_auc(split["val_labels"], scores),
                     "pixel_auroc": metrics.pixel_auroc(maps, split["val_masks"]),
                     "aupro": metrics.aupro(maps, split["val_masks"]),
                     "per_defect_pixel_auroc": per_defect(maps, split)}
    line = json.dumps(res)
    print(line, flush=True)
    if a.out:
        with open(a.out, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
