"""Markdown tables (mean ± sample std over seeds, in %) from the JSON files that elpv.py and
surfaces.py write, for RESULTS_ACCURACY.md:

    python benchmarks/accuracy/real_data_tables.py elpv RUN1.json [RUN2.json ...]
    python benchmarks/accuracy/real_data_tables.py surfaces RUN1.json [RUN2.json ...]

Several files are merged (e.g. one file per seed or per texture)."""
from __future__ import annotations

import json
import sys

import numpy as np


def _fmt(values) -> str:
    v = 100 * np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return "–"
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if v.size > 1 else f"{v.mean():.1f}"


def _runs(paths):
    runs = []
    for p in paths:
        with open(p) as f:
            runs += json.load(f)["runs"]
    return runs


def elpv_table(paths, part: str = "test") -> str:
    runs = _runs(paths)
    rows = list(runs[0][part])
    cols = ("overall", "mono", "poly")
    out = [f"| {part} AUROC (%) | overall | mono | poly |", "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r} | " + " | ".join(_fmt(run[part][r][c] for run in runs if r in run[part]) for c in cols) + " |")
    out.append(f"\nseeds {sorted(run['seed'] for run in runs)}; train seconds "
               f"{[run['train_seconds'] for run in runs]}")
    return "\n".join(out)


def surfaces_table(paths, part: str = "test") -> str:
    runs = _runs(paths)
    cols = ("image_auroc", "pixel_auroc", "aupro")
    out = [f"| texture | method / baseline | image AUROC | pixel AUROC | AUPRO |", "|---|---|---|---|---|"]
    for tex in sorted({r["texture"] for r in runs}):
        rs = [r for r in runs if r["texture"] == tex]
        for row in rs[0][part]:
            out.append(f"| {tex} | {row} | " + " | ".join(_fmt(r[part][row].get(c) for r in rs) for c in cols) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    kind, files = sys.argv[1], sys.argv[2:]
    part = "test"
    if files and files[0] in ("--val", "--test"):
        part, files = files[0][2:], files[1:]
    print(elpv_table(files, part) if kind == "elpv" else surfaces_table(files, part))
