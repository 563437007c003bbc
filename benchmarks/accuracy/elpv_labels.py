"""ELPV: how many labelled defects does the defect head need? (issue #13; validation only)

    python benchmarks/accuracy/elpv_labels.py --detectors DIR --seed 0 --labelled 25 50 100 200 363 \
        --out benchmarks/accuracy/results/elpv/exploration

``DIR/seed<S>.anomgan``: a detector of the chosen configuration saved by ``elpv.py --save``
(its GAN trained with the protocol's first 100 labelled defects). Its defect head is refitted,
same settings and seed, on the first N defects of the seeded pool (:func:`elpv_data.split`; the
protocol allows 100, the pool holds 363), and scored on the split's validation cells: the GAN
is kept, so this measures the head's use of labels, not the GAN's. Each N is compared with
the protocol's N = 100 (``--reference``) on the same cells by DeLong's paired test
(``metrics.roc_auc_difference``).

The head inputs (image and residual at the head's size) are computed once and cached as
float16 (``--cache``), so N = 100 reproduces the saved head's validation AUROC only to within
the head's retraining noise (~0.5), not exactly. Writes ``<out>/labels_seed<S>.json``, one
entry per N (with the fused validation scores), rewritten after each fit; with the reference
among the Ns, each other N gets its paired comparison against it (``against_reference``).
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
from anomgan.fileio import atomic_write_text  # noqa: E402
from anomgan.scoring import metrics  # noqa: E402
from anomgan.scoring.defect_head import DefectHead  # noqa: E402

import elpv_data  # noqa: E402
from elpv import aurocs  # noqa: E402


def head_inputs(det, sp: dict, cache: str | None) -> dict:
    """{"train", "pool", "val"}: (head inputs float16 (N, 2, s, s), unfused scores (N,))."""
    if cache and os.path.exists(cache):
        return torch.load(cache)
    size = det.head.config.size
    head, det.head = det.head, None  # the unfused scores and the residual maps
    out = {}
    try:
        for name, cells in (("train", sp["train"]), ("pool", sp["train_defects"]), ("val", sp["val"])):
            u, s = det._head_inputs_of(elpv_data.paths(cells), name, size, None, with_scores=True)
            out[name] = (u.half(), s)
    finally:
        det.head = head
    if cache:
        torch.save(out, cache)
    return out


def per_type(y: np.ndarray, kinds: np.ndarray, scores: np.ndarray) -> dict:
    """:func:`elpv.aurocs` in percent, one decimal."""
    return {k: round(100 * v, 1) for k, v in aurocs(y, kinds, scores).items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detectors", required=True, help="folder with seed<S>.anomgan (elpv.py --save)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--labelled", type=int, nargs="+", default=[25, 50, 100, 200, 363])
    p.add_argument("--reference", type=int, default=100, help="the N the others are compared with")
    p.add_argument("--out", required=True)
    p.add_argument("--cache", default=None, help="file for the head inputs (computed once)")
    p.add_argument("--root", default=None, help="ELPV data folder (default: the installed package's)")
    a = p.parse_args(argv)

    sp = elpv_data.split(a.seed, a.root)
    y, kinds = elpv_data.labels(sp["val"]), elpv_data.kinds(sp["val"])
    det = anomgan.load(os.path.join(a.detectors, f"seed{a.seed}.anomgan"))
    if det.head is None:
        raise SystemExit(f"{a.detectors}/seed{a.seed}.anomgan has no defect head")
    cfg = det.head.config
    data = head_inputs(det, sp, a.cache)
    u_tr, u_pool = data["train"][0].float(), data["pool"][0].float()
    u_v, s_v = data["val"][0].float(), data["val"][1]
    normal_v = torch.from_numpy(y == 0)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"labels_seed{a.seed}.json")
    if os.path.exists(path):
        with open(path) as f:
            res = json.load(f)
    else:
        res = {"seed": a.seed, "head": cfg.to_dict(), "pool": int(u_pool.shape[0]), "runs": {}}
    res["reference"], res["labels"] = a.reference, y.tolist()
    fused_of = {}
    for n in sorted(set(a.labelled)):
        if n > u_pool.shape[0]:
            raise SystemExit(f"--labelled {n}: the pool holds {u_pool.shape[0]} defects")
        t0 = time.monotonic()
        head = DefectHead.fit(u_tr, u_pool[:n], cfg, seed=a.seed)
        logits = head.logits(u_v)
        head.fit_fusion(s_v[normal_v], logits[normal_v])
        fused = head.fuse(s_v, logits).numpy()
        fused_of[n] = fused
        res["runs"][str(n)] = {"head": per_type(y, kinds, logits.numpy()), "fused": per_type(y, kinds, fused),
                               "gan": per_type(y, kinds, s_v.numpy()), "fused_scores": fused.tolist(),
                               "seconds": round(time.monotonic() - t0)}
        print(a.seed, n, json.dumps({k: v for k, v in res["runs"][str(n)].items() if k != "fused_scores"}),
              flush=True)
        atomic_write_text(path, json.dumps(res))
    for n, fused in fused_of.items():
        if n != a.reference and a.reference in fused_of:
            d = metrics.roc_auc_difference(y, fused, fused_of[a.reference])
            res["runs"][str(n)]["against_reference"] = {k: round(v, 4) for k, v in d.items()}
    atomic_write_text(path, json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
