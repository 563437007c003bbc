"""Textured surfaces with planted defects: image AUROC, pixel AUROC and AUPRO (issue #13).

Data (:func:`make_split`): scikit-image's ``brick()`` and ``grass()`` photographs (512x512
grayscale, real surfaces), one detector per texture, as a user would train one per product.
Train, validation and test crops come from disjoint regions of each photograph: train from the
left half (512x256), validation from the top-right quarter, test from the bottom-right quarter
(256x256 each); crops are CROP x CROP with random offsets and flips. The defects are SYNTHETIC,
planted with pixel masks, in realistic kinds and strengths (:func:`plant`): thin scratches
1-3 px wide, small spots, faint stains (smooth blobs), each darker or brighter than the surface
by an amount drawn from subtle to obvious (SUBTLE..OBVIOUS of the [0, 1] range), 1-2 defects
per defective crop. Per texture: TRAIN normal crops, LABELLED defective crops from the train
region (for methods that take known defects), VAL normal + VAL defective, TEST normal + TEST
defective (so 2 x 2 x TEST >= 200 test images over both textures).

    python benchmarks/accuracy/surfaces.py --config CFG.json --seeds 0 1 2 --out DIR [--val-only]

CFG.json: ``{"train_kwargs": {...}, "labelled_defects": N}`` as for elpv.py: the detector is
``anomgan.train(train, anomalous=labelled[:N], validation=val_normal, **train_kwargs)``.
Baselines on the same test images: mean intensity (both signs), image std, |x - median
filter| (its max as the image score, the map as the pixel map).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import anomgan  # noqa: E402
from anomgan.scoring import metrics  # noqa: E402

import baselines  # noqa: E402

CROP = 128
TRAIN, LABELLED, VAL, TEST = 400, 50, 50, 100
SUBTLE, OBVIOUS = 0.08, 0.40
TEXTURES = ("brick", "grass")


def texture(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 3:
        img = img.mean(-1)
    return img.astype(np.float32) / 255.0


def regions(img: np.ndarray) -> dict[str, np.ndarray]:
    H, W = img.shape
    return {"train": img[:, :W // 2], "val": img[:H // 2, W // 2:], "test": img[H // 2:, W // 2:]}


def crops(region: np.ndarray, n: int, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    size = size or CROP
    H, W = region.shape
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        y, x = rng.integers(0, H - size + 1), rng.integers(0, W - size + 1)
        c = region[y:y + size, x:x + size]
        if rng.random() < 0.5:
            c = c[:, ::-1]
        if rng.random() < 0.5:
            c = c[::-1]
        out[i] = c
    return out


def plant(img: np.ndarray, rng: np.random.Generator, n_defects: int | None = None
          ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(image with 1-2 defects, bool mask, what was planted). Kinds: scratch (a line 1-3 px
    wide, 15-70 px long), spot (a disc of radius 2-5 px), stain (a smooth Gaussian blob, sigma
    4-10 px, masked where it exceeds half its peak); each shifts the surface by a signed amount
    drawn log-uniformly between SUBTLE and OBVIOUS (stains use half of it: they are larger)."""
    H, W = img.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out, mask, what = img.copy(), np.zeros((H, W), bool), []
    for _ in range(n_defects or int(rng.integers(1, 3))):
        kind = ("scratch", "spot", "stain")[int(rng.integers(3))]
        amp = float(np.exp(rng.uniform(np.log(SUBTLE), np.log(OBVIOUS)))) * (1 if rng.random() < 0.5 else -1)
        cy, cx = rng.uniform(12, H - 12), rng.uniform(12, W - 12)
        if kind == "scratch":
            ang, length, width = rng.uniform(0, np.pi), rng.uniform(15, 70), rng.uniform(1, 3)
            dy, dx = np.sin(ang), np.cos(ang)
            along = (yy - cy) * dy + (xx - cx) * dx
            across = np.abs((yy - cy) * dx - (xx - cx) * dy)
            m = (across <= width / 2) & (np.abs(along) <= length / 2)
            out[m] += amp
        elif kind == "spot":
            r = rng.uniform(2, 5)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            out[m] += amp
        else:
            sigma = rng.uniform(4, 10)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
            out += 0.5 * amp * blob
            m = blob > 0.5
        mask |= m
        what.append({"kind": kind, "amplitude": round(amp, 3)})
    return np.clip(out, 0, 1), mask, what


def _tensor(images) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(images))).unsqueeze(1)


def planted_set(region: np.ndarray, n: int, rng: np.random.Generator, part: str = "val") -> dict:
    """n normal crops of ``region`` then n crops with planted defects: ``{part}`` (2n, 1, CROP,
    CROP) float in [0, 1], ``{part}_masks`` (2n, CROP, CROP) bool, ``{part}_labels`` (0 then 1),
    ``{part}_kinds`` (what was planted, [] for the normals)."""
    normal = crops(region, n, rng)
    planted = [plant(c, rng) for c in crops(region, n, rng)]
    return {part: _tensor(list(normal) + [p[0] for p in planted]),
            f"{part}_masks": np.concatenate([np.zeros((n, *normal.shape[1:]), bool), np.stack([p[1] for p in planted])]),
            f"{part}_labels": np.array([0] * n + [1] * n),
            f"{part}_kinds": [[]] * n + [p[2] for p in planted]}


def make_split(name: str, seed: int) -> dict:
    """The data of one texture for one seed (see the module doc): float tensors (N, 1, CROP,
    CROP) in [0, 1] and bool masks (N, CROP, CROP) for the validation / test sets."""
    rng = np.random.default_rng([seed, TEXTURES.index(name)])
    reg = regions(texture(name))
    out = {"train": _tensor(crops(reg["train"], TRAIN, rng))}
    out["labelled"] = _tensor([plant(c, rng)[0] for c in crops(reg["train"], LABELLED, rng)])
    for part, n in (("val", VAL), ("test", TEST)):
        out.update(planted_set(reg[part], n, rng, part))
    return out


def evaluate(scores: np.ndarray, maps: np.ndarray, labels: np.ndarray, masks: np.ndarray) -> dict:
    return {"image_auroc": metrics.roc_auc(labels, scores),
            "pixel_auroc": metrics.pixel_auroc(maps, masks),
            "aupro": metrics.aupro(maps, masks)}


def baseline_rows(x: torch.Tensor, labels: np.ndarray, masks: np.ndarray) -> dict[str, dict]:
    rows = {name: {"image_auroc": metrics.roc_auc(labels, fn(x))}
            for name, fn in baselines.IMAGE_BASELINES.items()}
    med = baselines.median_residual_map(x)
    rows["median-filter residual (max)"].update(pixel_auroc=metrics.pixel_auroc(med, masks),
                                                aupro=metrics.aupro(med, masks))
    return rows


def run(config: dict, name: str, seed: int, *, val_only: bool, save: str | None = None) -> dict:
    d = make_split(name, seed)
    n_lab = int(config.get("labelled_defects", 0))
    kwargs = dict(config["train_kwargs"])
    kwargs.setdefault("seed", seed)
    kwargs.setdefault("progress", False)
    val_normal = d["val"][d["val_labels"] == 0]
    t0 = time.time()
    det = anomgan.train(d["train"], anomalous=d["labelled"][:n_lab] if n_lab else None,
                        validation=val_normal, **kwargs)
    out = {"texture": name, "seed": seed, "train_seconds": round(time.time() - t0, 1), "info": det.info}
    if save:
        os.makedirs(save, exist_ok=True)
        det.save(os.path.join(save, f"{name}_seed{seed}.anomgan"))
    for part in (["val"] if val_only else ["val", "test"]):
        res = anomgan.detect(d[part], det)
        out[part] = {"anomgan": evaluate(res.scores.numpy(), res.maps.numpy(), d[f"{part}_labels"],
                                         d[f"{part}_masks"])}
        out[part].update(baseline_rows(d[part], d[f"{part}_labels"], d[f"{part}_masks"]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--textures", nargs="+", default=list(TEXTURES), choices=TEXTURES)
    p.add_argument("--val-only", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--name", default=None)
    p.add_argument("--save", default=None, help="also write each detector to <save>/<texture>_seed<S>.anomgan")
    args = p.parse_args(argv)
    with open(args.config) as f:
        config = json.load(f)
    runs = []
    for seed in args.seeds:
        for name in args.textures:
            r = run(config, name, seed, val_only=args.val_only, save=args.save)
            runs.append(r)
            print(json.dumps({k: r[k] for k in r if k in ("texture", "seed", "train_seconds", "val", "test")}),
                  flush=True)
    if args.out:
        from anomgan.fileio import atomic_write_text
        os.makedirs(args.out, exist_ok=True)
        stem = args.name or os.path.splitext(os.path.basename(args.config))[0]
        atomic_write_text(os.path.join(args.out, f"{stem}{'_val' if args.val_only else ''}.json"),
                          json.dumps({"config": config, "val_only": args.val_only, "runs": runs,
                                      "crop": CROP, "sizes": {"train": TRAIN, "labelled": LABELLED,
                                                              "val": 2 * VAL, "test": 2 * TEST}},
                                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
