"""`anomgan demo`: train and detect on real data that ships with anomgan, offline.

MNIST mode (default). Data: 7,000 real MNIST digits shipped inside the package
(anomgan/demo_data/mnist_sample.npz; MNIST by LeCun, Cortes and Burges, CC BY-SA 3.0). One digit
is normal. Its training digits are split into training and validation; ``noise`` (5%) of the
training set is replaced by other digits, unlabelled (the "not perfectly clean" normal set),
and ``n_labelled`` (50) other digits, disjoint from those, are the known anomalies. noisy-gan
gets them as extra fakes for its discriminator; anogan, trained the same way with γ = 1, does
not. Both are calibrated on the validation digits (5% false positives), then score the held-out
test digits once; the demo prints both AUROCs and writes noisy-gan's HTML report.

High-resolution mode (``--high-res``). Surfaces: scikit-image's real 512×512 photographs
``brick()`` and ``grass()``, mirror-tiled to 2048×2048 and cropped into 1024×1024 surfaces.
Defects are SYNTHETIC, planted by the demo: thin scratches and small spots, together well under
1% of the pixels. A few "normal" training surfaces carry faint defects (label noise) and a few
labelled defective surfaces are given as anomalies. The detector (dual-disc: one forward pass
per tile, so 1024×1024 images score in seconds on a CPU) trains on 64×64 tiles and detects at
full resolution; the report shows the 1024×1024 maps.
"""
from __future__ import annotations

import os
import time
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F


def _mnist_sample():
    with resources.files("anomgan").joinpath("demo_data/mnist_sample.npz").open("rb") as fh:
        d = np.load(fh)
        return d["x_train"], d["y_train"], d["x_test"], d["y_test"]


def _to_images(a: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(a).float().div_(255.0).unsqueeze(1)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)


def mnist_split(digit: int, seed: int, noise: float = 0.05, n_labelled: int = 50, size: int = 32):
    """The demo's data: dict of float (N, 1, size, size) tensors and test labels (1 = anomaly)."""
    xtr, ytr, xte, yte = _mnist_sample()
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(ytr == digit))
    n_val = len(normal) // 5
    val, train = normal[:n_val], normal[n_val:]
    others = rng.permutation(np.flatnonzero(ytr != digit))
    n_noise = int(round(noise * len(train)))
    train = np.concatenate([train[: len(train) - n_noise], others[:n_noise]])
    labelled = others[n_noise:n_noise + n_labelled]
    test_norm = np.flatnonzero(yte == digit)
    test_anom = np.concatenate([rng.permutation(np.flatnonzero(yte == k))[:20] for k in range(10) if k != digit])
    test = np.concatenate([test_norm, test_anom])
    return {
        "train": _to_images(xtr[train], size), "validation": _to_images(xtr[val], size),
        "anomalous": _to_images(xtr[labelled], size),
        "test": _to_images(xte[test], size),
        "test_labels": np.r_[np.zeros(len(test_norm)), np.ones(len(test_anom))].astype(int),
        "test_digits": yte[test],
    }


def run_mnist(out_dir: str = "anomgan-demo", steps: int | None = None, seed: int = 0,
              digit: int = 0, progress: bool = True, search_steps: int = 50) -> int:
    from ..api import train
    from ..detector import ScoringConfig
    from ..scoring.metrics import roc_auc
    from .report import write_report

    steps = steps or 800
    os.makedirs(out_dir, exist_ok=True)
    data = mnist_split(digit, seed)
    # DCGAN at half the usual width: the demo's budget is a few minutes on two CPU cores
    hparams = {"z_dim": 64, "width": 32, "max_width": 256}
    stage_steps = {"encoder": max(1, steps // 4)}
    print(f"anomgan demo: MNIST digit {digit} normal; {len(data['train'])} training digits of which "
          f"5% are other digits (unlabelled noise), {len(data['anomalous'])} labelled anomalies, "
          f"{len(data['validation'])} validation digits, {len(data['test'])} test digits "
          f"({int(data['test_labels'].sum())} anomalous). {steps} training steps per method "
          f"({steps - stage_steps['encoder']} GAN, {stage_steps['encoder']} encoder), "
          f"{search_steps} latent-search steps per image.", flush=True)
    scoring = ScoringConfig(search_steps=search_steps, search_restarts=1)
    aurocs, dets = {}, {}
    for name, anomalous in (("noisy-gan", data["anomalous"]), ("anogan", None)):
        t0 = time.perf_counter()
        det = train(data["train"], anomalous, method=name, validation=data["validation"],
                    target_fpr=0.05, scoring=scoring, seed=seed, steps=steps, batch_size=64,
                    stage_steps=stage_steps, hparams=hparams,
                    progress=progress, checkpoint_dir=os.path.join(out_dir, f"{name}.checkpoints"),
                    checkpoint_every=500)
        res = det.detect(data["test"])
        aurocs[name] = roc_auc(data["test_labels"], res.scores.numpy())
        dets[name] = (det, res)
        det.save(os.path.join(out_dir, f"{name}.anomgan"))
        print(f"  {name:9s} test AUROC {100 * aurocs[name]:.1f}  "
              f"({time.perf_counter() - t0:.0f} s, threshold {det.threshold.value:.4g})", flush=True)
    det, res = dets["noisy-gan"]
    res.names = [f"test {i}: digit {d}" for i, d in enumerate(data["test_digits"])]
    path = os.path.join(out_dir, "report.html")
    write_report(path, data["test"], res, det.describe(), title=f"anomgan demo: MNIST, digit {digit} normal")
    print(f"noisy-gan AUROC {100 * aurocs['noisy-gan']:.1f} vs anogan {100 * aurocs['anogan']:.1f} "
          f"(one seed, {steps} steps: a demo, not a benchmark; see benchmarks/RESULTS.md)")
    print(f"wrote {path} and the two detectors in {out_dir}/")
    return 0


# ---- high resolution ---------------------------------------------------------------------------
def _texture(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)().astype(np.float32) / 255.0
    row = np.concatenate([img, img[:, ::-1]], axis=1)
    tile = np.concatenate([row, row[::-1]], axis=0)  # 1024x1024, seamless by mirroring
    return np.concatenate([np.concatenate([tile, tile], 1)] * 2, 0)  # 2048x2048


def plant_defects(surface: np.ndarray, rng: np.random.Generator, strength: float = 0.35,
                  n_scratches: int = 2, n_spots: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """SYNTHETIC micro-defects: thin scratches (1-2 px wide lines) and small dark/bright spots.
    Returns (surface with defects, boolean mask); the mask covers well under 1% of pixels."""
    out, mask = surface.copy(), np.zeros(surface.shape, dtype=bool)
    H, W = surface.shape
    yy, xx = np.mgrid[0:H, 0:W]
    for _ in range(n_scratches):
        y0, x0 = rng.uniform(64, H - 64), rng.uniform(64, W - 64)
        ang, length, width = rng.uniform(0, np.pi), rng.uniform(60, 160), rng.uniform(0.8, 1.6)
        dy, dx = np.sin(ang), np.cos(ang)
        t = (yy - y0) * dy + (xx - x0) * dx
        d = np.abs((yy - y0) * dx - (xx - x0) * dy)
        mask |= (d <= width) & (np.abs(t) <= length / 2)
    for _ in range(n_spots):
        cy, cx, r = rng.uniform(32, H - 32), rng.uniform(32, W - 32), rng.uniform(3, 6)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    sign = 1.0 if rng.random() < 0.5 else -1.0
    out[mask] = np.clip(out[mask] + sign * strength, 0, 1)
    return out, mask


def highres_data(seed: int, n_train: int = 12, n_test: int = 8, size: int = 1024):
    rng = np.random.default_rng(seed)
    textures = [_texture("brick"), _texture("grass")]

    def surface(k):
        tex = textures[k % 2]
        y, x = rng.integers(0, tex.shape[0] - size), rng.integers(0, tex.shape[1] - size)
        s = tex[y:y + size, x:x + size]
        return s[:, ::-1].copy() if rng.random() < 0.5 else s.copy()

    train, noisy = [], []
    for i in range(n_train):
        s = surface(i)
        if i < 2:  # label noise: faint defects hidden in the "normal" training set
            s, _ = plant_defects(s, rng, strength=0.12, n_scratches=1, n_spots=1)
            noisy.append(i)
        train.append(s)
    anomalous, anomalous_masks = zip(*(plant_defects(surface(i), rng) for i in range(4)))
    validation = [surface(i) for i in range(4)]  # clean surfaces for the threshold
    test, masks, labels = [], [], []
    for i in range(n_test):
        s = surface(i // 2)  # each texture gets clean and defective test surfaces
        if i % 2:
            s, m = plant_defects(s, rng)
        else:
            m = np.zeros_like(s, dtype=bool)
        test.append(s)
        masks.append(m)
        labels.append(i % 2)
    t = lambda a: torch.from_numpy(np.stack(a)).unsqueeze(1).float()  # noqa: E731
    return {"train": t(train), "anomalous": t(list(anomalous)), "anomalous_masks": np.stack(anomalous_masks),
            "test": t(test), "validation": t(validation),
            "masks": np.stack(masks), "labels": np.array(labels), "noisy_train": noisy}


def random_tiles(images: torch.Tensor, n: int, tile: int, gen: torch.Generator,
                 masks: np.ndarray | None = None) -> torch.Tensor:
    """n random tile×tile crops; with masks, only crops that contain defect pixels."""
    out = []
    B, _, H, W = images.shape
    while len(out) < n:
        b = int(torch.randint(B, (1,), generator=gen))
        y = int(torch.randint(H - tile + 1, (1,), generator=gen))
        x = int(torch.randint(W - tile + 1, (1,), generator=gen))
        if masks is not None and masks[b, y + 8:y + tile - 8, x + 8:x + tile - 8].sum() < 4:
            continue
        out.append(images[b, :, y:y + tile, x:x + tile])
    return torch.stack(out)


def run_high_res(out_dir: str = "anomgan-demo-highres", steps: int | None = None, seed: int = 0,
                 progress: bool = True, tile: int = 64) -> int:
    from ..api import train
    from ..detector import ScoringConfig
    from ..scoring.metrics import pixel_auroc, roc_auc
    from .report import write_report

    steps = steps or 1500
    os.makedirs(out_dir, exist_ok=True)
    data = highres_data(seed)
    gen = torch.Generator().manual_seed(seed)
    normal_tiles = random_tiles(data["train"], 3000, tile, gen)
    anom_tiles = random_tiles(data["anomalous"], 300, tile, gen, masks=data["anomalous_masks"])
    print(f"anomgan demo --high-res: {len(data['train'])} normal 1024x1024 surfaces (brick, grass; "
          f"{len(data['noisy_train'])} carry faint SYNTHETIC defects as label noise), "
          f"{len(data['anomalous'])} labelled defective surfaces, {len(data['test'])} test surfaces "
          f"with planted SYNTHETIC scratches/spots ({100 * data['masks'].mean():.3f}% of pixels). "
          f"Training dual-disc on {tile}x{tile} tiles, {steps} steps.")
    t0 = time.perf_counter()
    # no tile-level calibration: the threshold is set below on whole clean surfaces, scored
    # exactly as test surfaces are (tiles, stitched map, patch top-n)
    # lr 1e-4 (the paper's) rather than dual-disc's default 1e-3: on these texture tiles, one
    # seed, 1e-3 gave image / pixel AUROC 43.8 / 71.4 and 1e-4 75.0 / 79.3 (benchmarks/RESULTS.md)
    det = train(normal_tiles, anom_tiles, method="dual-disc", validation_fraction=0.0,
                hparams={"lr": 1e-4},
                seed=seed, steps=steps, batch_size=32, progress=progress,
                scoring=ScoringConfig(image_score="patch_topn", patch=16, stride=8, n=3,
                                      tile_overlap=16, batch_size=64),
                checkpoint_dir=os.path.join(out_dir, "checkpoints"), checkpoint_every=500)
    det.calibrate(data["validation"], fpr=0.0)  # just above every clean validation surface
    print(f"  trained in {time.perf_counter() - t0:.0f} s; threshold {det.threshold.value:.4g} "
          f"(the highest of {len(data['validation'])} clean 1024x1024 validation surfaces)")
    t0 = time.perf_counter()
    res = det.detect(data["test"])
    dt = time.perf_counter() - t0
    img_auc = roc_auc(data["labels"], res.scores.numpy())
    pix_auc = pixel_auroc(res.maps.numpy()[data["labels"] == 1], data["masks"][data["labels"] == 1])
    res.names = [f"surface {i} ({'planted defects' if lab else 'clean'})" for i, lab in enumerate(data["labels"])]
    det.save(os.path.join(out_dir, "surfaces.anomgan"))
    path = os.path.join(out_dir, "report.html")
    write_report(path, data["test"], res, det.describe(), title="anomgan demo: 1024x1024 surfaces",
                 max_side=1024)
    print(f"  detected {len(res)} 1024x1024 surfaces in {dt:.1f} s; image AUROC {100 * img_auc:.1f}, "
          f"pixel AUROC on the defective ones {100 * pix_auc:.1f} (synthetic defects, one seed)")
    print(f"wrote {path}")
    return 0
