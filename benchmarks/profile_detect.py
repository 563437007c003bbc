"""Where end-to-end ``Detector.detect`` time goes, per stage.

    python benchmarks/profile_detect.py [--threads N] [--repeat R] [--device cpu|cuda] [--compiled]

Cases (untrained networks of each method's default size: timing does not depend on the weights):
  32x32, batch 64, uint8 in: dual-disc and ganomaly;
  1024x1024 grey uint8, 2 images, dual-disc on 64x64 tiles (overlap 16: 441 tiles an image,
  scored 128 at a time), image score = patch top-n (16/8/3) of the stitched map (the setting of
  ``anomgan bench`` and benchmarks/RESULTS.md).

Stages (each the median over ``--repeat`` runs of its summed time inside one detect call):
  input      to_batch: dtype/layout conversion to float (N, C, H, W) in [0, 1]
  networks   the forward passes of the method's networks (its direct sub-modules)
  maps       the per-pixel error maps (pixel_error_map)
  patch      patch top-n scoring (patch_topn_l1: per image or tile, and over stitched maps)
  tile cut   cutting tiles out of the images
  blend      blending tile maps back (window weights, accumulation, float64 -> float32)
  other      the rest: the glue (x*2-1, [-1,1] -> [0,1], concatenation, result)
The stages are measured by wrapping the library's functions for the time of the run (this
script only; the library has no timers). ``--compiled`` adds the total of the compiled path
(``Detector.compile()``; its networks, maps and patch scoring are fused, so only the total).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import defaultdict

import torch

from anomgan import ops
from anomgan.data import ingest
from anomgan.detector import Detector, ScoringConfig
from anomgan.models import get_method
from anomgan.scoring import tiling

STAGES = ("input", "networks", "maps", "patch", "tile cut", "blend", "other")


class Timers:
    def __init__(self, device: str):
        self.t = defaultdict(float)
        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        self.depth = 0  # only the outermost timed call counts (no double counting)

    def wrap(self, stage, fn):
        def timed(*a, **k):
            if self.depth:
                return fn(*a, **k)
            self.depth += 1
            self.sync()
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.sync()
                self.t[stage] += time.perf_counter() - t0
                self.depth -= 1
        return timed


@contextlib.contextmanager
def _patched(timers: Timers, det: Detector):
    """Wrap the stage functions wherever anomgan's modules imported them, and time the
    method's networks with forward hooks; everything is restored on exit."""
    targets = {ops.pixel_error_map: "maps", ops.patch_topn_l1: "patch",
               ingest.to_batch: "input"}
    saved = []
    for name, mod in list(sys.modules.items()):
        if not name.startswith("anomgan"):
            continue
        for attr, val in list(vars(mod).items()):
            if callable(val) and any(val is f for f in targets):
                saved.append((mod, attr, val))
                setattr(mod, attr, timers.wrap(targets[val], val))
    methods = [(tiling, "_cut", "tile cut"), (tiling._Blender, "__init__", "blend"),
               (tiling._Blender, "add", "blend"), (tiling._Blender, "result", "blend")]
    for owner, attr, stage in methods:
        val = getattr(owner, attr)
        saved.append((owner, attr, val))
        setattr(owner, attr, timers.wrap(stage, val))
    hooks, starts = [], {}

    def pre(m, _inp):
        if not timers.depth:
            timers.sync()
            starts[m] = time.perf_counter()

    def post(m, _inp, _out):
        if m in starts:
            timers.sync()
            timers.t["networks"] += time.perf_counter() - starts.pop(m)

    for child in det.method.children():
        hooks += [child.register_forward_pre_hook(pre), child.register_forward_hook(post)]
    try:
        yield
    finally:
        for owner, attr, val in reversed(saved):
            setattr(owner, attr, val)
        for h in hooks:
            h.remove()


def profile(det: Detector, batch, repeat: int, device: str) -> dict[str, float]:
    """Median seconds per stage (and "total") of ``det.detect(batch)``."""
    det.detect(batch)  # warm-up
    runs = []
    for _ in range(repeat):
        timers = Timers(device)
        with _patched(timers, det):
            timers.sync()
            t0 = time.perf_counter()
            det.detect(batch)
            timers.sync()
            total = time.perf_counter() - t0
        row = {s: timers.t.get(s, 0.0) for s in STAGES if s != "other"}
        row["other"] = max(0.0, total - sum(row.values()))
        row["total"] = total
        runs.append(row)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def total_time(det: Detector, batch, repeat: int, device: str) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    det.detect(batch)
    ts = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        det.detect(batch)
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def cases(device: str):
    gen = torch.Generator().manual_seed(0)
    small = (torch.rand(64, 1, 32, 32, generator=gen) * 255).to(torch.uint8)
    big = (torch.rand(2, 1, 1024, 1024, generator=gen) * 255).to(torch.uint8)
    torch.manual_seed(0)
    for name in ("dual-disc", "ganomaly"):
        yield f"{name} 32x32 B=64", Detector(get_method(name)(32, 1).to(device)), small
    tiled = Detector(get_method("dual-disc")(64, 1).to(device),
                     scoring=ScoringConfig(image_score="patch_topn", batch_size=128))
    yield "dual-disc 1024x1024 tiled B=2", tiled, big


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compiled", action="store_true", help="also time Detector.compile()'s path")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"median of {args.repeat} runs; ms per detect call (% of its total)")
    head = f"{'case':32s}" + "".join(f"{s:>15s}" for s in STAGES) + f"{'total':>10s}{'img/s':>9s}"
    if args.compiled:
        head += f"{'compiled':>10s}{'img/s':>9s}"
    print(head)
    for label, det, batch in cases(args.device):
        r = profile(det, batch, args.repeat, args.device)
        n = batch.shape[0]
        line = f"{label:32s}" + "".join(
            f"{1e3 * r[s]:8.2f} ({100 * r[s] / r['total']:3.0f}%)" for s in STAGES)
        line += f"{1e3 * r['total']:10.2f}{n / r['total']:9.1f}"
        if args.compiled:
            det.compile()
            tc = total_time(det, batch, args.repeat, args.device)
            line += f"{1e3 * tc:10.2f}{n / tc:9.1f}"
        print(line)


if __name__ == "__main__":
    main()
