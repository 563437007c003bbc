"""Validation AUROC of dual-disc every few steps of one training run (protocol 1 data).

A diagnostic, not a protocol: it shows how stable training is, e.g. the BatchNorm generator
(``--hparam g_norm=batch``) against the default without normalisation. Data as in
one_class.py (class ``--digit`` normal, k-means balanced other classes as anomalies, the same
validation hold-out subsampled to 400 images); batches drawn uniformly at random; the
validation images are scored in eval mode, exactly as a Detector scores them. The test set
is never touched. Prints one line per checkpoint: step, validation AUROC, the mean scores of
the normal and the anomalous validation images, and the mean training losses since the last
line.

    python benchmarks/accuracy/val_curve.py --digit 2 --hparam g_norm=batch
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402
import one_class  # noqa: E402

from anomgan.scoring import metrics  # noqa: E402
from anomgan.models import get_method  # noqa: E402


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=C.MNIST_DEFAULT)
    p.add_argument("--digit", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hparam", action="append", default=[], metavar="NAME=VALUE",
                   help="dual-disc hyper-parameter over the CPU budget's (repeatable; VALUE is JSON "
                        "or a string)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    hp = dict(C.budget_for("cpu", "dual-disc").hparams)
    for item in args.hparam:
        k, _, v = item.partition("=")
        try:
            hp[k] = json.loads(v)
        except json.JSONDecodeError:
            hp[k] = v
    x, y = C.load_split(args.data, "train")
    s = one_class.build_sets(x, y, args.digit, args.seed)
    xn, xa = x[s["normal"]], x[s["anomalous"]]
    keep = C.subset(len(s["val_y"]), 400, seed=args.seed + 1)
    vx, vy = x[s["val"]][keep], s["val_y"][keep.numpy()]
    torch.manual_seed(args.seed)
    m = get_method("dual-disc")(C.IMAGE_SIZE, 1, **hp)
    opt = m.make_optimizers("main")
    g = torch.Generator().manual_seed(args.seed)
    losses: dict[str, list[float]] = {}
    curve = []
    print(f"dual-disc {hp} on {C.dataset_name(args.data)} class {args.digit}, seed {args.seed}",
          flush=True)
    for step in range(1, args.steps + 1):
        nb = xn[torch.randint(len(xn), (args.batch_size,), generator=g)]
        ab = xa[torch.randint(len(xa), (args.batch_size,), generator=g)]
        for k, v in m.train_step("main", nb, ab, opt).items():
            losses.setdefault(k, []).append(v)
        if step % args.every == 0 or step == args.steps:
            scores = m.score(vx)[0].numpy()
            row = {"step": step, "val_auroc": metrics.roc_auc(vy, scores),
                   "score_normal": float(scores[vy == 0].mean()),
                   "score_anomalous": float(scores[vy == 1].mean()),
                   "losses": {k: round(float(np.mean(v)), 4) for k, v in losses.items()
                              if k != "anomaly_step"}}
            curve.append(row)
            losses = {}
            print(f"step {step}: val AUROC {100 * row['val_auroc']:.1f}, score normal "
                  f"{row['score_normal']:.3f} anomalous {row['score_anomalous']:.3f}, losses {row['losses']}",
                  flush=True)
    return curve


if __name__ == "__main__":
    main()
