"""How much of the surfaces benchmark can a segmenter learn at all? (issue #13, diagnostic)

The ORACLE: the library's own ``Segmenter.fit`` (network, width, focal loss, Adam with cosine
decay, flips, batch, steps and crop size as the chosen surfaces configuration) given, as its
``anomalies``, the benchmark's OWN planted defects with their true masks (``surfaces.plant`` on
half of each batch of training-region crops), which no user has: it knows the defect kinds,
sizes and amplitude range exactly. The CONTROL: the same call with the library's generic blob
generator (``synthetic_anomalies``), what ``train(segmenter=...)`` learns from. Both are scored
on the split's validation crops (whole 128-px crops, the image score the mean of the 50 largest
map values, as the chosen configuration's patch 1 / n 50), never on test, and on crops planted
the same way in the training region ("train-region": texture the network has seen, so no
generalisation is needed there). ``--train-rows A:B`` trains on those rows of the training
region only and also scores the rest of it: new texture from the same part of the photograph.

If the oracle falls short of a goal, the goal is out of reach for this network and budget on
this texture whatever generator is used. Per-defect rows: the validation crops with a single
defect, the pixel AUROC of its mask against all normal crops' pixels, by kind and |amplitude|
band. Every scored set also carries the one-line baselines on the same crops (mean intensity
both signs, image std, the median-filter residual).

    python benchmarks/accuracy/surfaces_ceiling.py --texture grass --generator oracle --seed 0 \\
        [--width 16 --steps 3000] [--train-rows 0:256] [--out results.jsonl]
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import surfaces  # noqa: E402
from anomgan.scoring import metrics  # noqa: E402
from anomgan.scoring.segmenter import (Segmenter, SegmenterConfig, SegNet, net_input,  # noqa: E402
                                       synthetic_anomalies)

BANDS = ((0.15, "0.08-0.15"), (0.25, "0.15-0.25"), (math.inf, "0.25-0.41"))
TOP_N = 50


def oracle_anomalies(rng: np.random.Generator):
    """``Segmenter.fit``'s ``anomalies``: the benchmark's own defects (``surfaces.plant``, with
    their masks) in the even-indexed crops of each batch, the odd ones left clean."""
    def plant(x: torch.Tensor, pool: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        xs, m = x.clone(), torch.zeros(x.shape[0], *x.shape[-2:])
        for i in range(0, x.shape[0], 2):
            img, mask, _ = surfaces.plant(x[i, 0].numpy(), rng)
            xs[i, 0], m[i] = torch.from_numpy(img), torch.from_numpy(mask).float()
        return xs, m
    return plant


def train(generator: str, region: np.ndarray, seed: int, *, width: int, steps: int, size: int,
          batch_size: int) -> SegNet:
    """The library's ``Segmenter.fit`` (its loop, loss and schedule) on crops of ``region``,
    planting the oracle's or the library's anomalies."""
    rng = np.random.default_rng(1000 + seed)
    crops = lambda n: torch.from_numpy(surfaces.crops(region, n, rng, size))[:, None]  # noqa: E731
    anomalies = oracle_anomalies(rng) if generator == "oracle" else synthetic_anomalies
    config = SegmenterConfig(steps=steps, batch_size=batch_size, width=width)
    return Segmenter.fit(crops, None, config, 1, seed=seed, anomalies=anomalies).net


def train_region_split(texture: str, seed: int, region: np.ndarray | None = None) -> dict:
    """Validation-shaped crops (VAL normal + VAL planted, masks, kinds) cut from the training
    region (or ``region``), with their own random stream."""
    region = surfaces.regions(surfaces.texture(texture))["train"] if region is None else region
    return surfaces.planted_set(region, surfaces.VAL, np.random.default_rng([seed, 2000]))


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
    p.add_argument("--train-rows", default=None, metavar="A:B",
                   help="train on rows A:B of the training region only (e.g. 0:256, its top half); "
                        "scored also on the rest of the region (unseen texture of the same part)")
    p.add_argument("--out", default=None, help="append the result as one JSON line")
    a = p.parse_args(argv)
    t0 = time.time()
    full = surfaces.regions(surfaces.texture(a.texture))["train"]
    seen, rest = full, None
    if a.train_rows:
        rows = slice(*(int(v) for v in a.train_rows.split(":")))
        seen, before, after = full[rows], full[:rows.start or 0], full[rows.stop or len(full):]
        if len(before) and len(after):  # joined, they would make crops across a seam
            p.error(f"--train-rows {a.train_rows}: leave the unseen rows on one side (A:B with A = 0 or B = end)")
        rest = after if len(after) else before
        if min(len(seen), len(rest)) < surfaces.CROP:
            p.error(f"--train-rows {a.train_rows}: the trained and the unseen rows must each hold a "
                    f"{surfaces.CROP}-px crop (the region has {len(full)} rows)")
    net = train(a.generator, seen, a.seed, width=a.width, steps=a.steps, size=a.size,
                batch_size=a.batch_size)
    res = {"texture": a.texture, "seed": a.seed, "generator": a.generator, "width": a.width,
           "steps": a.steps, "size": a.size, "batch_size": a.batch_size, "train_rows": a.train_rows,
           "train_seconds": round(time.time() - t0, 1)}
    splits = [("val", surfaces.make_split(a.texture, a.seed)),
              ("train-region", train_region_split(a.texture, a.seed, seen))]
    if rest is not None:
        splits.append(("unseen rows of the train region", train_region_split(a.texture, a.seed, rest)))
    for name, split in splits:
        with torch.no_grad():
            maps = torch.sigmoid(net(net_input(split["val"], None))).numpy()
        scores = np.sort(maps.reshape(len(maps), -1), 1)[:, -TOP_N:].mean(1)
        res[name] = {"image_auroc": metrics.roc_auc(split["val_labels"], scores),
                     "pixel_auroc": metrics.pixel_auroc(maps, split["val_masks"]),
                     "aupro": metrics.aupro(maps, split["val_masks"]),
                     "per_defect_pixel_auroc": per_defect(maps, split),
                     "baselines": surfaces.baseline_rows(split["val"], split["val_labels"], split["val_masks"])}
    line = json.dumps(res)
    print(line, flush=True)
    if a.out:
        with open(a.out, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
