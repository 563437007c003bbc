"""Protocol 3: IR-MNIST (Kimura & Yanagihara 2018): pixel-level anomaly maps on large images.

A puzzle is an 11 x 11 grid of 28 x 28 MNIST digits (308 x 308). Training puzzles are built
from training digits other than '3'; the method trains on random 32 x 32 crops of them (the
normal images) and, for methods that use anomalies, on 32 x 32 crops centred on '3' digits
(training digits; the paper trains its method "using normal class data and abnormal class
data"). Test puzzles are built from test-set digits, every digit class included (about one
cell in ten is a '3'); the Detector scores them at full size by tiling (32-pixel tiles) and the
pixel AUROC (anomgan.scoring.metrics.pixel_auroc) of its maps is measured against the mask of the '3'
digits' stroke pixels (digit intensity > 0.25). Validation (training length, threshold): crops
of held-out training digits, normal crops against crops centred on a '3'.

That pixel AUROC mostly measures stroke against background: the map "input intensity" (no
model at all) already scores ~0.92 on it. So two more numbers are reported beside it: the
same AUROC of that trivial map (``baseline``), and the stroke-only AUROC: '3' stroke pixels
against the stroke pixels of the other digits, background left out, where 0.5 means the map
does not single out the '3's at all; and the cell AUROC: each 28 x 28 cell scored by the mean
of its map, against whether it holds a '3' (a map that lights up the right tiles scores high
here even when its blobs are tile-shaped rather than digit-shaped).

Writes ir_mnist.json, ir_mnist.md and ir_mnist.png (test puzzles beside their difference maps,
as the paper's Figure 6) into --out.

    python benchmarks/accuracy/ir_mnist.py --methods noisy-gan,dual-disc,anogan --seeds 3
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402

from anomgan.scoring import metrics  # noqa: E402
from anomgan.data import load_mnist  # noqa: E402

GRID, CELL, CROP, ANOMALY = 11, 28, 32, 3
SIDE = GRID * CELL
STROKE = 0.25
METHODS = ("dual-disc", "noisy-gan", "anogan", "ganomaly")
USES_ANOMALIES = {"dual-disc": True, "noisy-gan": True, "ganomaly": False, "anogan": False}


def puzzles(x: torch.Tensor, y: torch.Tensor, n: int, g: torch.Generator, exclude: int | None = None):
    """n puzzles (n, 1, 308, 308) from digits x (N, 1, 28, 28) with labels y; the label grid
    (n, 11, 11). Digits of class ``exclude`` are left out."""
    pool = torch.arange(len(y)) if exclude is None else torch.nonzero(y != exclude).flatten()
    pick = pool[torch.randint(len(pool), (n, GRID * GRID), generator=g)]
    cells = x[pick]  # (n, 121, 1, 28, 28)
    img = cells.reshape(n, GRID, GRID, CELL, CELL).permute(0, 1, 3, 2, 4).reshape(n, 1, SIDE, SIDE)
    return img.contiguous(), y[pick].reshape(n, GRID, GRID)


def anomaly_mask(img: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(n, 308, 308) bool: stroke pixels (> STROKE) of the '3' cells."""
    cells = (grid == ANOMALY).repeat_interleave(CELL, 1).repeat_interleave(CELL, 2)
    return cells & (img[:, 0] > STROKE)


def random_crops(img: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    i = torch.randint(img.shape[0], (n,), generator=g)
    r = torch.randint(SIDE - CROP + 1, (n,), generator=g)
    c = torch.randint(SIDE - CROP + 1, (n,), generator=g)
    return torch.stack([img[a, :, b:b + CROP, d:d + CROP] for a, b, d in zip(i.tolist(), r.tolist(), c.tolist())])


def centred_crops(img: torch.Tensor, grid: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n crops of 32 x 32 around '3' cells (jitter +-2 pixels)."""
    where = torch.nonzero(grid == ANOMALY)  # (m, 3): puzzle, row, col
    pick = where[torch.randint(len(where), (n,), generator=g)]
    jit = torch.randint(-2, 3, (n, 2), generator=g)
    out = []
    for (p, r, c), (jr, jc) in zip(pick.tolist(), jit.tolist()):
        top = min(max(0, r * CELL - (CROP - CELL) // 2 + jr), SIDE - CROP)
        left = min(max(0, c * CELL - (CROP - CELL) // 2 + jc), SIDE - CROP)
        out.append(img[p, :, top:top + CROP, left:left + CROP])
    return torch.stack(out)


def sizes(budget: str, scale: float) -> dict:
    if budget == "paper":
        return {"train_puzzles": 500, "n_crops": 60000, "n_anom_crops": 6000, "val_crops": 1000,
                "test_puzzles": 100}
    s = lambda n: max(8, int(round(n * scale)))  # noqa: E731
    return {"train_puzzles": s(60), "n_crops": s(6000), "n_anom_crops": s(600), "val_crops": s(400),
            "test_puzzles": max(2, int(round(10 * min(1.0, scale * 2))))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(p)
    p.add_argument("--methods", default="noisy-gan,dual-disc")
    p.add_argument("--test-puzzles", type=int, default=None, help="override the number of test puzzles")
    args = p.parse_args(argv)
    C.setup(args)
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            p.error(f"--methods: {m!r} is not one of {METHODS}")
    sz = sizes(args.budget, args.scale)
    if args.test_puzzles:
        sz["test_puzzles"] = args.test_puzzles
    xtr, ytr = load_mnist(args.data, "train", channels=1)
    xte, yte = load_mnist(args.data, "test", channels=1)
    # training digits split 90/10 into training and validation digits (fixed)
    perm = C.permutation(len(ytr), 12345)
    n_val = len(ytr) // 10
    vi, ti = perm[:n_val], perm[n_val:]
    g = torch.Generator().manual_seed(7)
    test_img, test_grid = puzzles(xte, yte, sz["test_puzzles"], g)
    test_mask = anomaly_mask(test_img, test_grid)
    budgets = {m: C.apply_overrides(C.budget_for(args.budget, m, args.scale), args, m) for m in methods}
    test_stroke = test_img[:, 0] > STROKE
    doc = {**C.run_header(args, {m: b.describe() for m, b in budgets.items()}), "protocol": "ir_mnist",
           "sizes": sz, "anomaly_pixel_fraction": float(test_mask.float().mean()),
           "baseline_input_intensity": map_aurocs(test_img[:, 0], test_mask, test_stroke, test_grid),
           "runs": []}
    t0 = time.time()
    shown = {}
    for seed in range(args.seeds):
        gs = torch.Generator().manual_seed(100 + seed)
        tr_img, _ = puzzles(xtr[ti], ytr[ti], sz["train_puzzles"], gs, exclude=ANOMALY)
        normal = random_crops(tr_img, sz["n_crops"], gs)
        an_img, an_grid = puzzles(xtr[ti], ytr[ti], max(4, sz["train_puzzles"] // 4), gs)
        anomalous = centred_crops(an_img, an_grid, sz["n_anom_crops"], gs)
        va_img, _ = puzzles(xtr[vi], ytr[vi], max(4, sz["train_puzzles"] // 4), gs, exclude=ANOMALY)
        vb_img, vb_grid = puzzles(xtr[vi], ytr[vi], max(4, sz["train_puzzles"] // 4), gs)
        nv = sz["val_crops"] // 2
        val_x = torch.cat([random_crops(va_img, nv, gs), centred_crops(vb_img, vb_grid, nv, gs)])
        val_y = np.r_[np.zeros(nv), np.ones(nv)].astype(np.int64)
        for m in methods:
            use = USES_ANOMALIES[m]
            r = C.train_select_score(m, budgets[m], normal=normal, anomalous=anomalous if use else None,
                                     anomaly_labels=None, val_x=val_x, val_y=val_y, test_x=None,
                                     test_y=None, seed=seed, device=args.device)
            det = r.pop("_detector")
            if args.val_only:
                doc["runs"].append(r)
                print(f"IR-MNIST {m} seed {seed}: {C.describe_run(r)}", flush=True)
                continue
            t1 = time.time()
            maps = []
            for i in range(test_img.shape[0]):
                _, mp = det.score_tensor(test_img[i:i + 1].to(args.device))
                maps.append(mp.detach().cpu())
            maps = torch.cat(maps)
            r.update(map_aurocs(maps, test_mask, test_stroke, test_grid))
            r["test_score_s"] = round(time.time() - t1, 1)
            doc["runs"].append(r)
            if seed == 0:
                shown[m] = maps[:3]
            print(f"IR-MNIST {m} seed {seed}: pixel AUROC {100 * r['pixel_auroc']:.1f}, stroke-only "
                  f"{100 * r['stroke_auroc']:.1f}, cell {100 * r['cell_auroc']:.1f} "
                  f"(val image AUROC {100 * r['val_auroc']:.1f}, {r['train_and_select_s'] + r['test_score_s']:.0f} s)",
                  flush=True)
            C.write_outputs(args.out, "ir_mnist", doc, render(doc, methods))  # partial results
    doc["elapsed_s"] = round(time.time() - t0, 1)
    if shown:
        picture(test_img[:3], test_mask[:3], shown, os.path.join(args.out, "ir_mnist.png"))
    C.publish(args.out, "ir_mnist", doc, render(doc, methods))
    return doc


def map_aurocs(maps: torch.Tensor, mask: torch.Tensor, stroke: torch.Tensor,
               grid: torch.Tensor) -> dict[str, float]:
    """pixel_auroc: all pixels against the '3' stroke mask; stroke_auroc: the same over stroke
    pixels only ('3' strokes against the other digits' strokes); cell_auroc: each 28 x 28 cell
    scored by the mean of its map, against "the cell holds a '3'" (does the map point at the
    right digits, whatever the shape of its blobs)."""
    m, g, st = maps.numpy(), mask.numpy(), stroke.numpy()
    cells = maps.reshape(-1, GRID, CELL, GRID, CELL).mean(dim=(2, 4)).flatten().numpy()
    return {"pixel_auroc": metrics.pixel_auroc(m, g),
            "stroke_auroc": metrics.roc_auc(g[st].astype(np.int64), m[st].astype(np.float64)),
            "cell_auroc": metrics.roc_auc((grid == ANOMALY).flatten().numpy().astype(np.int64),
                                          cells.astype(np.float64))}


def render(doc, methods) -> str:
    def col(m, key):
        return C.fmt([r[key] for r in doc["runs"] if r["method"] == m and key in r])

    rows = [[m, col(m, "pixel_auroc"), col(m, "stroke_auroc"), col(m, "cell_auroc"), col(m, "val_auroc")]
            for m in methods]
    base = doc["baseline_input_intensity"]
    rows.append(["baseline: map = input intensity (no model)", f"{100 * base['pixel_auroc']:.1f}",
                 f"{100 * base['stroke_auroc']:.1f}", f"{100 * base['cell_auroc']:.1f}", ""])
    sz = doc["sizes"]
    return (f"# Protocol 3: IR-MNIST pixel AUROC (Kimura & Yanagihara)\n\n"
            f"{doc['date_utc']}, {doc['machine']}; budget `{doc['budget']}`, seeds 0..{doc['seeds'] - 1}; "
            f"{sz['train_puzzles']} training puzzles (no '3') -> {sz['n_crops']} normal 32x32 crops, "
            f"{sz['n_anom_crops']} '3'-centred crops for the methods that use anomalies; "
            f"{sz['test_puzzles']} test puzzles of 308x308 scored by tiling; '3' stroke pixels = "
            f"{100 * doc['anomaly_pixel_fraction']:.2f} % of test pixels. Mean ± std over seeds (%).\n\n"
            + C.markdown_table(["method", "pixel AUROC (test puzzles)",
                                "stroke-only AUROC ('3' vs other strokes)",
                                "cell AUROC (cells holding a '3')", "val image AUROC (crops)"], rows))


def picture(img, mask, shown: dict, path: str) -> None:
    """Rows: test puzzles; columns: input (with the '3' mask outlined in red), then one
    difference map per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, cols = img.shape[0], 1 + len(shown)
    fig, axes = plt.subplots(n, cols, figsize=(3.2 * cols, 3.2 * n), squeeze=False)
    for i in range(n):
        ax = axes[i][0]
        ax.imshow(img[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.contour(mask[i].numpy().astype(float), levels=[0.5], colors="red", linewidths=0.5)
        ax.set_title("input ('3' outlined)" if i == 0 else "")
        for j, (m, maps) in enumerate(shown.items(), start=1):
            axes[i][j].imshow(maps[i].numpy(), cmap="inferno")
            axes[i][j].set_title(f"|x - G(.)|: {m}" if i == 0 else "")
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    C.save_figure(fig, path, dpi=80)


if __name__ == "__main__":
    main()
