"""ELPV solar cells: anomgan against the one-line and supervised baselines (issue #13).

    pip install elpv-dataset==1.0.0.post1     # CC BY-NC-SA 4.0: never commit its images
    python benchmarks/accuracy/elpv.py --config benchmarks/accuracy/results/elpv/chosen.json \
        --seeds 0 1 2 --out benchmarks/accuracy/results/elpv

Protocol (:mod:`elpv_data`): seeded split stratified by type; the detector is built exactly as
a user would: ``anomgan.train(train_normal_paths, anomalous=defect_paths[:N],
validation=validation_normal_paths, **train_kwargs)`` on the full-size 300x300 files, then
``anomgan.detect(paths, detector)``. The split seed is the training seed (one split per seed).
``--val-only`` scores only the validation cells (normals and defects): what every choice was
made on. Without it the test cells are scored once, at the end. Baselines on the same split:
mean intensity (both signs), image std, the median-filter residual, and the supervised CNN
trained on the same normals against the same N labelled defects (--no-cnn skips it).
``--save DIR`` keeps each seed's detector; ``--load DIR`` scores those detectors instead of
training again (the config must be the one they were trained with): a ``--val-only --save``
run chooses, and its detectors' test cells are then scored once.
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
from anomgan.data import as_images  # noqa: E402
from anomgan.scoring import metrics  # noqa: E402

import baselines  # noqa: E402
import elpv_data  # noqa: E402


def aurocs(y: np.ndarray, kinds: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    out = {"overall": metrics.roc_auc(y, scores)}
    for k in sorted(set(kinds)):
        m = kinds == k
        out[k] = metrics.roc_auc(y[m], scores[m])
    return out


def run_seed(config: dict, seed: int, *, val_only: bool, cnn: bool, root: str | None,
             save: str | None = None, cnn_steps: int = 1500, load: str | None = None) -> dict:
    sp = elpv_data.split(seed, root)
    n_lab = int(config.get("labelled_defects", 0))
    if not 0 <= n_lab <= elpv_data.MAX_LABELLED_DEFECTS:
        raise ValueError(f"labelled_defects must be in [0, {elpv_data.MAX_LABELLED_DEFECTS}], got {n_lab}")
    val_normal = [c for c in sp["val"] if not c.defect]
    defects = sp["train_defects"][:n_lab]
    kwargs = dict(config["train_kwargs"])
    kwargs.setdefault("seed", seed)
    kwargs.setdefault("progress", False)
    t0 = time.time()
    if load:  # the detector this config trained before (e.g. a --val-only --save run)
        det = anomgan.load(os.path.join(load, f"seed{seed}.anomgan"))
        train_s = det.info.get("training_seconds")
    else:
        det = anomgan.train(elpv_data.paths(sp["train"]), anomalous=elpv_data.paths(defects) or None,
                            validation=elpv_data.paths(val_normal), **kwargs)
        train_s = time.time() - t0
    if save:
        os.makedirs(save, exist_ok=True)
        det.save(os.path.join(save, f"seed{seed}.anomgan"))
    out = {"seed": seed, "train_seconds": None if train_s is None else round(train_s, 1),
           "detector_info": det.info, "loaded_from": load,
           "threshold": None if det.threshold is None else det.threshold.value,
           "sizes": {k: len(v) for k, v in sp.items()}, "labelled_defects": n_lab}
    sets = ["val"] if val_only else ["val", "test"]
    for name in sets:
        cells = sp[name]
        y, kinds = elpv_data.labels(cells), elpv_data.kinds(cells)
        t0 = time.time()
        res = anomgan.detect(elpv_data.paths(cells), det)
        out[f"{name}_detect_seconds"] = round(time.time() - t0, 1)
        scores = res.scores.numpy()
        out[name] = {"anomgan": aurocs(y, kinds, scores)}
        # the overall AUROC's 95 % interval: how far apart two configurations must be to differ
        out[f"{name}_anomgan_ci95"] = list(metrics.roc_auc_ci(y, scores)[1:])
        x = as_images(elpv_data.paths(cells))
        for bname, fn in baselines.IMAGE_BASELINES.items():
            out[name][bname] = aurocs(y, kinds, fn(x))
    if cnn and n_lab > 0:
        size = int(config.get("cnn_image_size", 128))
        read = lambda cells: as_images(elpv_data.paths(cells), image_size=size)  # noqa: E731
        evaluate_on = "val" if val_only else "test"
        r = baselines.supervised_cnn(read(sp["train"]), read(defects), read(sp["val"]),
                                     elpv_data.labels(sp["val"]), read(sp[evaluate_on]), seed=seed,
                                     steps=cnn_steps, check_every=min(250, cnn_steps))
        cells = sp[evaluate_on]
        out[evaluate_on]["supervised CNN"] = aurocs(elpv_data.labels(cells), elpv_data.kinds(cells),
                                                    r["test_scores"])
        out["cnn"] = {"val_auroc": r["val_auroc"], "step": r["step"], "image_size": size}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help='JSON: {"train_kwargs": {...}, "labelled_defects": N}')
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--val-only", action="store_true")
    p.add_argument("--no-cnn", action="store_true")
    p.add_argument("--root", default=None, help="ELPV data folder (default: the installed package's)")
    p.add_argument("--out", default=None, help="write <out>/<name>.json")
    p.add_argument("--name", default=None)
    p.add_argument("--cnn-steps", type=int, default=1500, help="supervised CNN baseline steps")
    p.add_argument("--save", default=None, help="also write each seed's detector to <save>/seed<S>.anomgan")
    p.add_argument("--load", default=None,
                   help="score <load>/seed<S>.anomgan (written by --save with this --config) "
                        "instead of training: choose on a --val-only run, then score its test once")
    args = p.parse_args(argv)
    with open(args.config) as f:
        config = json.load(f)
    runs = []
    for seed in args.seeds:
        r = run_seed(config, seed, val_only=args.val_only, cnn=not args.no_cnn, root=args.root,
                     save=args.save, cnn_steps=args.cnn_steps, load=args.load)
        runs.append(r)
        print(json.dumps({k: r[k] for k in r if k in ("seed", "train_seconds", "val", "test")}), flush=True)
    doc = {"config": config, "val_only": args.val_only, "runs": runs,
           "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        name = args.name or os.path.splitext(os.path.basename(args.config))[0]
        from anomgan.fileio import atomic_write_text
        atomic_write_text(os.path.join(args.out, f"{name}{'_val' if args.val_only else ''}.json"),
                          json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
