"""Protocol 1 (Kim et al. 2020, section 4): one-class benchmarks on MNIST / Fashion-MNIST.

For each class d:
* training: the class-d training images (less a 10 % validation hold-out) as normal, plus an
  equal number of other-class training images as labelled anomalies, chosen with the k-means
  balanced sampler (anomgan.data.KMeansBalancedSampler: the same number per class, and per
  k-means cluster within a class); methods that use anomalies (dual-disc, noisy-gan) train
  on them, the others (ganomaly, anogan) on the normal images only;
* validation (training length, threshold): the held-out class-d images plus as many
  other-class training images not in the training set;
* test: the full test set (a fixed random subset under the CPU budget; see ``--test-subset``),
  anomaly = class != d, scored once at the end.
The CPU budget trains dual-disc 6x longer on Fashion-MNIST (a data path naming it) than on
MNIST: see ``common._cpu``.
Prints per-class and mean AUROC beside the paper's Table 5 rows and writes one_class.json and
one_class.md into --out.

    python benchmarks/accuracy/one_class.py --methods dual-disc --digits 0,1 --seeds 3
    python benchmarks/accuracy/one_class.py --data /usr/share/datasets/fashion-mnist
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

from anomgan.data import KMeansBalancedSampler  # noqa: E402

#: Kim et al. 2020, Table 5 (mean AUROC %, over the 10 classes)
PAPER_TABLE5 = {
    "mnist": {"AE": 91.9, "AnoGAN": 93.7, "GANomaly": 92.8, "OCGAN": 97.5, "ARNet": 98.3,
              "Kim et al.": 99.7},
    "fashion-mnist": {"AE": 80.9, "GANomaly": 80.9, "GeoTrans": 93.5, "ARNet": 93.9,
                      "Kim et al.": 98.6},
}
USES_ANOMALIES = {"dual-disc": True, "noisy-gan": True, "ganomaly": False, "anogan": False}


def build_sets(x, y, digit: int, seed: int, val_fraction: float = 0.1):
    """Index sets for one class and seed (module doc). The anomalies: one k-means balanced epoch
    (10 clusters per class) of as many indices as normal training images, without repeats."""
    g = torch.Generator().manual_seed(1000 * seed + 17 * digit + 2)
    own = torch.nonzero(y == digit).flatten()
    own = own[torch.randperm(len(own), generator=g)]
    n_val = max(1, int(round(val_fraction * len(own))))
    val_normal, train_own = own[:n_val], own[n_val:]
    other = torch.nonzero(y != digit).flatten()
    other = other[torch.randperm(len(other), generator=g)]
    val_anom, pool = other[:n_val], other[n_val:]
    sampler = KMeansBalancedSampler(x[pool], batch_size=1, labels=y[pool], n_clusters=10,
                                    epoch_size=len(train_own), seed=seed)
    picked = torch.unique(sampler.epoch_indices(0))  # drop repeats (none when clusters are large)
    anomalous = pool[picked]
    return {"normal": train_own, "anomalous": anomalous, "val": torch.cat([val_normal, val_anom]),
            "val_y": np.r_[np.zeros(len(val_normal)), np.ones(len(val_anom))].astype(np.int64)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(p)
    p.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9", help="normal classes (comma-separated)")
    p.add_argument("--methods", default=",".join(C.METHOD_NAMES))
    p.add_argument("--render-only", nargs="+", metavar="JSON",
                   help="train nothing: merge the runs of these one_class.json files (e.g. one "
                        "process per group of classes) and write the table into --out")
    args = p.parse_args(argv)
    if args.render_only:
        doc = C.merge_docs(args.render_only, ("digits",))
        methods = [m for m in C.METHOD_NAMES if any(r["method"] == m for r in doc["runs"])]
        C.publish(args.out, "one_class", doc, render(doc, methods, doc["digits"]))
        return doc
    C.setup(args)
    digits = [int(d) for d in args.digits.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in C.METHOD_NAMES:
            p.error(f"--methods: {m!r} is not one of {C.METHOD_NAMES}")
    ds = C.dataset_name(args.data)

    xtr, ytr, xte, yte, budgets = C.load_protocol_data(args, methods)
    doc = {**C.run_header(args, {m: b.describe() for m, b in budgets.items()}),
           "protocol": "one_class", "dataset": ds, "digits": digits, "n_test": int(len(yte)),
           "paper_table5": PAPER_TABLE5[ds], "metric": C.metric_key(args), "runs": []}
    t0 = time.time()
    for d in digits:
        test_y = (yte != d).numpy().astype(np.int64)
        for seed in range(args.seeds):
            s = build_sets(xtr, ytr, d, seed)
            for m in methods:
                use = USES_ANOMALIES[m]
                r = C.train_select_score(
                    m, budgets[m], normal=xtr[s["normal"]],
                    anomalous=xtr[s["anomalous"]] if use else None,
                    anomaly_labels=ytr[s["anomalous"]] if use else None,
                    val_x=xtr[s["val"]], val_y=s["val_y"], test_x=None if args.val_only else xte,
                    test_y=test_y, seed=seed, device=args.device)
                r.pop("_detector")
                r["digit"] = d
                doc["runs"].append(r)
                print(f"{ds} class {d} {m} seed {seed}: {C.describe_run(r)}", flush=True)
                C.write_outputs(args.out, "one_class", doc, render(doc, methods, digits))  # partial
    doc["elapsed_s"] = round(time.time() - t0, 1)
    C.publish(args.out, "one_class", doc, render(doc, methods, digits))
    return doc


def render(doc, methods, digits) -> str:
    ds = doc["dataset"]
    key = doc.get("metric", "test_auroc")
    header = ["method"] + [str(d) for d in digits] + ["mean"]
    rows = []
    for m in methods:
        per = []
        seed_means: dict[int, list[float]] = {}
        for d in digits:
            v = [r[key] for r in doc["runs"] if r["method"] == m and r["digit"] == d]
            per.append(C.fmt(v))
            for r in doc["runs"]:
                if r["method"] == m and r["digit"] == d:
                    seed_means.setdefault(r["seed"], []).append(r[key])
        # mean over classes per seed, then mean ± std of that over seeds
        full = [np.mean(v) for v in seed_means.values() if len(v) == len(digits)]
        rows.append([f"{m} (ours)"] + per + [C.fmt(full)])
    for name, v in PAPER_TABLE5[ds].items():
        rows.append([f"{name} (paper, Table 5)"] + ["" for _ in digits] + [f"{v:.1f}"])
    note = ("" if len(digits) == 10 else
            f" Only classes {', '.join(map(str, digits))} were run: our 'mean' is over those "
            "classes, the paper's over all ten.")
    return (f"# Protocol 1: one-class {ds} (Kim et al. 2020)\n\n"
            f"{doc['date_utc']}, {doc['machine']}; budget `{doc['budget']}`, seeds 0..{doc['seeds'] - 1}, "
            f"test images {doc['n_test']}. {C.metric_title(key)} (%) mean ± std over seeds.{note}\n\n"
            + C.markdown_table(header, rows))


if __name__ == "__main__":
    main()
