"""`anomgan bench`: a short table of the kernels against their pure-PyTorch references, and
end-to-end `detect` throughput per method on 1024×1024 grayscale images with the share of time
in each stage (single-pass methods also compiled, as `anomgan detect` runs them, and in
bfloat16). Full pytest-benchmark suites: `python -m pytest benchmarks`.

End-to-end numbers use untrained networks of each method's default size (throughput does not
depend on the weights); the latent-search methods score as trained detectors do (encoder warm
start) with the detector's default step count (``ScoringConfig().search_steps``) unless
``search_steps`` is given.
"""
from __future__ import annotations

import time

import torch


def _median_time(fn, repeat: int = 5) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def op_table(size: int = 1024, batch: int = 8) -> list[tuple]:
    from ..ops import available_backends, patch_topn_l1

    rows = []
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        x = torch.rand(batch, 1, size, size, device=dev)
        y = torch.rand(batch, 1, size, size, device=dev)
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        ref = None
        for be in available_backends(dev):
            t = _median_time(lambda: (patch_topn_l1(x, y, backend=be), sync()))
            ref = t if be == "torch" else ref
            rows.append((f"patch_topn_l1 {batch}x1x{size}x{size}", dev, be, t, ref))
    return rows


def _timed_detect(det, batch: torch.Tensor) -> tuple[float, str]:
    """(images/s, share of time per stage) of one ``det`` scoring ``batch`` end to end."""
    from ..data import to_batch

    stages = {"preprocess": 0.0, "network+search": 0.0, "blend+score": 0.0}
    inner = det.score_model_size

    def timed(x, backend=None):
        t0 = time.perf_counter()
        out = inner(x, backend)
        stages["network+search"] += time.perf_counter() - t0
        return out

    det.score_model_size = timed
    t0 = time.perf_counter()
    x = to_batch(batch, channels=1)
    stages["preprocess"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    det.score_tensor(x)
    total_score = time.perf_counter() - t1
    stages["blend+score"] = total_score - stages["network+search"]
    total = stages["preprocess"] + total_score
    del det.score_model_size
    return len(batch) / total, ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in stages.items())


def detect_table(size: int = 1024, images: int = 2, search_steps: int | None = None) -> list[tuple]:
    """(label, images/s, stage shares) per method, eager; for the single-pass methods also
    compiled (``anomgan detect``'s default, ``--compile exact``) and compiled in bfloat16."""
    from ..detector import Detector, ScoringConfig
    from ..models import METHODS

    rows = []
    gen = torch.Generator().manual_seed(0)
    batch = (torch.rand(images, 1, size, size, generator=gen) * 255).to(torch.uint8)
    steps = ScoringConfig().search_steps if search_steps is None else search_steps
    for name, cls in METHODS.items():
        method = cls(64, 1)
        if hasattr(method, "encoder_trained"):
            method.encoder_trained.fill_(True)  # as a trained detector: E(x) warm start
        det = Detector(method, scoring=ScoringConfig(search_steps=steps, image_score="patch_topn",
                                                     batch_size=128))
        search = hasattr(method, "encoder_trained")
        label = f"{name}" + (f" ({steps} search steps)" if search else "")
        if not search:  # warm-up (oneDNN primitives per shape), as the compiled rows get
            det.detect(batch)
        rows.append((label, *_timed_detect(det, batch)))
        if det.compile().compiled:  # single-pass methods; the warm-up builds the copy
            det.detect(batch)
            rows.append((f"{name}, compiled", *_timed_detect(det, batch)))
            det.compile(dtype=torch.bfloat16).detect(batch)
            rows.append((f"{name}, compiled bf16", *_timed_detect(det, batch)))
    return rows


def run(size: int = 1024, batch: int = 8, images: int = 2, search_steps: int | None = None) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(f"{'op':32s} {'device':6s} {'backend':8s} {'median ms':>10s} {'vs torch':>9s}")
    for op, dev, be, t, ref in op_table(size, batch):
        ratio = f"{ref / t:8.2f}x" if ref else "       -"
        print(f"{op:32s} {dev:6s} {be:8s} {t * 1e3:10.2f} {ratio:>9s}")
    print(f"\nend-to-end detect, {images} images of 1x{size}x{size} uint8, 64x64 models, CPU:")
    for label, ips, shares in detect_table(size, images, search_steps):
        print(f"  {label:36s} {ips:8.3f} images/s   ({shares})")
