"""Compare two saved benchmark runs by ratios, which travel between machines where absolute
times do not.

    python -m pytest benchmarks --benchmark-autosave      # each run saved under .benchmarks/
    python benchmarks/compare.py A B                      # e.g. 0001 0002, or two JSON paths

A and B: a pytest-benchmark JSON file, or a saved run's number / name prefix ("0003",
"0003_abc123") looked up under ``.benchmarks/`` (``--storage`` to change). For every group of
benchmarks it prints, for both runs, each row's ratio to its reference in the same run
(reference median / row median: above 1 = faster than the reference) and the change B / A:
  kernel  each backend against the pure-PyTorch reference ("torch");
  detect  each detect path (compiled, onnxruntime) against "eager";
  search  latent_search against the plain loop ("loop").
Which row is the reference comes from each benchmark's extra_info ("label", "reference"),
written by benchmarks/conftest.py, else from its parameters ("backend" -> torch, "path" ->
eager). ``--flag F`` marks rows whose ratio fell below F times A's (default 0.9).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from dataclasses import dataclass

__all__ = ["load_run", "ratios", "compare", "format_table", "main"]


@dataclass(frozen=True)
class Row:
    kind: str
    group: str
    label: str
    reference: str
    median: float


def resolve(ref: str, storage: str = ".benchmarks") -> str:
    """A JSON path, or the one saved run under ``storage`` whose file name starts with
    ``ref``; FileNotFoundError / ValueError otherwise."""
    if os.path.isfile(ref):
        return ref
    hits = sorted(glob.glob(os.path.join(storage, "**", f"{ref}*.json"), recursive=True))
    if not hits:
        raise FileNotFoundError(f"compare: no file {ref!r} and no saved run {ref}* under {storage}/")
    if len(hits) > 1:
        raise ValueError(f"compare: {ref!r} matches {len(hits)} saved runs: "
                         + ", ".join(os.path.basename(h) for h in hits))
    return hits[0]


def _row(bench: dict) -> Row | None:
    info, params = bench.get("extra_info") or {}, bench.get("params") or {}
    label, reference, kind = info.get("label"), info.get("reference"), info.get("role")
    if label is None:
        if "backend" in params:
            label, reference, kind = params["backend"], "torch", "kernel"
        elif "path" in params:
            label, reference, kind = params["path"], "eager", "detect"
        else:
            return None
    reference = reference or ("torch" if kind == "kernel" else "eager")
    group = bench.get("group") or bench.get("name", "?")
    return Row(kind or "?", group, str(label), str(reference), float(bench["stats"]["median"]))


def load_run(path: str) -> tuple[dict, list[Row]]:
    """(header: machine, commit, date; rows) of a pytest-benchmark JSON file."""
    with open(path) as f:
        data = json.load(f)
    mi, ci = data.get("machine_info") or {}, data.get("commit_info") or {}
    cpu = mi.get("anomgan_cpu") or (mi.get("cpu") or {}).get("brand_raw") or mi.get("processor") or mi.get("machine") or "?"
    head = {"file": os.path.basename(path), "machine": cpu, "node": mi.get("node", "?"),
            "commit": (ci.get("id") or "?")[:10], "date": data.get("datetime", "?")}
    rows = [r for r in map(_row, data.get("benchmarks") or []) if r is not None]
    return head, rows


def ratios(rows: list[Row]) -> dict[tuple[str, str, str], tuple[float, str]]:
    """(kind, group, label) -> (reference median / median, reference label) for every row
    whose group has its reference; the reference rows themselves are left out."""
    refs = {(r.group, r.label): r.median for r in rows}
    out = {}
    for r in rows:
        if r.label == r.reference:
            continue
        ref = refs.get((r.group, r.reference))
        if ref is not None and r.median > 0:
            out[(r.kind, r.group, r.label)] = (ref / r.median, r.reference)
    return out


def compare(rows_a: list[Row], rows_b: list[Row]) -> list[dict]:
    """One dict per (kind, group, label) of either run: ratio_a, ratio_b (None where the run
    lacks it), change = ratio_b / ratio_a (None unless both), reference."""
    ra, rb = ratios(rows_a), ratios(rows_b)
    out = []
    for key in sorted(set(ra) | set(rb)):
        a, b = ra.get(key), rb.get(key)
        out.append({"kind": key[0], "group": key[1], "label": key[2],
                    "reference": (a or b)[1],
                    "ratio_a": a[0] if a else None, "ratio_b": b[0] if b else None,
                    "change": b[0] / a[0] if a and b else None})
    return out


def format_table(head_a: dict, head_b: dict, table: list[dict], flag: float = 0.9) -> str:
    lines = [f"A: {head_a['file']}  {head_a['date']}  commit {head_a['commit']}  {head_a['machine']}",
             f"B: {head_b['file']}  {head_b['date']}  commit {head_b['commit']}  {head_b['machine']}",
             "ratio = reference median / median (above 1: faster than the reference)", ""]
    gw = max([len(r["group"]) for r in table] + [5])
    lines.append(f"{'kind':7s} {'group':{gw}s} {'row':12s} {'vs':6s} {'A':>8s} {'B':>8s} "
                 f"{'B / A':>7s}")
    fmt = lambda v: f"{v:7.2f}x" if v is not None else "       -"  # noqa: E731
    for r in table:
        mark = " !" if r["change"] is not None and r["change"] < flag else ""
        change = f"{r['change']:7.2f}" if r["change"] is not None else "      -"
        lines.append(f"{r['kind']:7s} {r['group']:{gw}s} {r['label']:12s} {r['reference']:6s} "
                     f"{fmt(r['ratio_a'])} {fmt(r['ratio_b'])} {change}{mark}")
    if not table:
        lines.append("(no benchmark with a reference in the same run in either file)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="first run: a JSON path or a saved run's number/name prefix")
    ap.add_argument("b", help="second run")
    ap.add_argument("--storage", default=".benchmarks", help="pytest-benchmark's storage folder")
    ap.add_argument("--flag", type=float, default=0.9,
                    help="mark rows whose ratio in B fell below this fraction of A's")
    args = ap.parse_args(argv)
    try:
        head_a, rows_a = load_run(resolve(args.a, args.storage))
        head_b, rows_b = load_run(resolve(args.b, args.storage))
    except (OSError, ValueError, KeyError) as exc:
        print(f"compare: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(head_a, head_b, compare(rows_a, rows_b), args.flag))
    return 0


if __name__ == "__main__":
    sys.exit(main())
