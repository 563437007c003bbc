"""End-to-end detect throughput on the CPU: eager, compiled (``Detector.compile()``) and
onnxruntime (``Detector.export``) side by side in one run.

Cases (untrained networks; throughput does not depend on the weights):
  * 32x32 grey, batch 64, uint8 in, scores and maps out: dual-disc (default size, width 8),
    ganomaly at the issue's baseline size (DCGAN width 64, <= 512 channels, z 100: the size of
    the 1,200 images/s eager and the OpenVINO anchor) and ganomaly at its default size since
    issue 13 (width 16, <= 64 channels, z 64; no goal: a smaller network);
  * 1024x1024 grey, 2 images, uint8 in: dual-disc on 64x64 tiles (overlap 16, 441 tiles an
    image, 128 per network call), image score = patch top-n of the stitched map (the setting
    of ``anomgan bench`` and benchmarks/RESULTS.md's 6.2 images/s).

Paths:
  eager        ``det.detect(x)``
  compiled     ``det.compile().detect(x)``: the default compiled path (on the CPU the
               inference copy without torch.compile, which measured fastest; compile time is
               excluded: it runs in the warm-up); equal to eager within 1e-5
  inductor     ``det.compile(compiler="inductor")``: the copy under torch.compile (inductor's
               C++ backend); equal to eager within 1e-5
  bf16         ``det.compile(dtype=torch.bfloat16)``: the networks in bfloat16 (opt-in, not
               equal to eager: checked within 2e-2 relative on the scores, 1e-2 on the maps);
               fast only on CPUs with AVX512-BF16 / AMX
  inductor-bf16  both: ``det.compile(compiler="inductor", dtype=torch.bfloat16)``
  int8         ``det.compile(dtype=torch.qint8, calibration=...)``: int8 networks (x86 engine),
               calibrated on other random images of the same size (not equal to eager: checked
               by rank correlation of the scores > 0.95 and the maps within 5e-2)
  onnxruntime  ``det.export(path)`` then an onnxruntime session (uint8 numpy in, numpy out;
               intra-op threads = torch's threads). Model-size images only: tiling around an
               exported graph is the README's numpy recipe, not a library path.

Every path is checked against eager before it is timed (compiled within 1e-5, onnxruntime
within 1e-4). extra_info holds images/s; the closing table (benchmarks/conftest.py) gives each
path's ratio to eager and the issue's goal for the group (ganomaly >= 4.5x, dual-disc >= 2x,
1024 tiled >= 3x of the 6.2 images/s measured before, i.e. >= 18.6 images/s).

Run on an idle machine:  python -m pytest benchmarks/test_bench_detect.py --benchmark-only
"""
import os
import tempfile

import numpy as np
import pytest
import torch

from anomgan.detector import Detector, ScoringConfig
from anomgan.models import get_method

GOALS = {"dual-disc": 2.0, "ganomaly": 4.5, "ganomaly-default": None}
#: case name -> (method, hparams): ganomaly at the issue's baseline size and at its default
CASES = {"dual-disc": ("dual-disc", {}), "ganomaly": ("ganomaly", {"z_dim": 100, "width": 64, "max_width": 512}),
         "ganomaly-default": ("ganomaly", {})}
COMPILED_PATHS = ("compiled", "inductor", "bf16", "inductor-bf16", "int8")
TILED_GOAL, TILED_BASELINE = 3.0, 6.2  # images/s of eager dual-disc tiled before issue 15
SMALL = dict(batch=64, size=32)


def _images(n, size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, size, size, generator=gen) * 255).to(torch.uint8)


def _detector(name, size, scoring=None):
    method, hparams = CASES[name]
    torch.manual_seed(0)
    return Detector(get_method(method)(size, 1, **hparams), scoring=scoring)


def _ort_session(det):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        pytest.skip(f"onnxruntime does not import: {exc}")
    if not hasattr(det, "export"):
        pytest.skip("Detector.export does not exist in this tree")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    # the session holds the graph in memory: the exported file is removed once it is built
    with tempfile.TemporaryDirectory(prefix="anomgan-bench-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        try:
            det.export(path)
        except ImportError as exc:
            pytest.skip(f"Detector.export needs a package that is missing: {exc}")
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _bench(benchmark, group, fn, rounds):
    fn()  # warm-up (compiles the compiled path, primes oneDNN caches)
    benchmark.group = group
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=2, iterations=1)


def _compile_checked(det, x, ref, path):
    if path in ("compiled", "inductor"):
        det.compile(compiler="inductor" if path == "inductor" else "auto")
        got = det.detect(x)
        torch.testing.assert_close(got.scores, ref.scores, rtol=0, atol=1e-5)
        torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-5)
    elif path == "int8":  # calibrated on other random images of the same size (not the timed ones)
        det.compile(dtype=torch.qint8, calibration=_images(64 if x.shape[-1] <= 64 else 2, x.shape[-1], seed=7))
        got = det.detect(x)
        rank = lambda s: s.argsort().argsort().double()  # noqa: E731
        assert torch.corrcoef(torch.stack([rank(got.scores), rank(ref.scores)]))[0, 1] > 0.95
        torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=5e-2)
    else:
        det.compile(compiler="inductor" if path == "inductor-bf16" else "auto", dtype=torch.bfloat16)
        got = det.detect(x)
        torch.testing.assert_close(got.scores, ref.scores, rtol=2e-2, atol=1e-4)
        torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-2)


@pytest.mark.parametrize("path", ["eager", *COMPILED_PATHS, "onnxruntime"])
@pytest.mark.parametrize("name", list(CASES))
def test_detect_32(benchmark, record_detect, name, path):
    det = _detector(name, SMALL["size"])
    x = _images(SMALL["batch"], SMALL["size"])
    ref = det.detect(x)
    if path == "eager":
        fn = lambda: det.detect(x)  # noqa: E731
    elif path in COMPILED_PATHS:
        _compile_checked(det, x, ref, path)
        fn = lambda: det.detect(x)  # noqa: E731
    else:
        sess = _ort_session(det)
        xn = x.numpy()
        scores, maps = sess.run(["scores", "maps"], {"images": xn})
        np.testing.assert_allclose(scores, ref.scores.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(maps, ref.maps.numpy(), rtol=0, atol=1e-4)
        fn = lambda: sess.run(["scores", "maps"], {"images": xn})  # noqa: E731
    group = f"detect cpu {name} 32x32 B={SMALL['batch']} uint8"
    _bench(benchmark, group, fn, rounds=30 if name == "dual-disc" else 10)
    record_detect(group, path, benchmark, SMALL["batch"], GOALS[name])
    benchmark.extra_info.update(method=name, threads=torch.get_num_threads())


@pytest.mark.parametrize("path", ["eager", *COMPILED_PATHS])
def test_detect_1024_tiled(benchmark, record_detect, path):
    det = _detector("dual-disc", 64, ScoringConfig(image_score="patch_topn", batch_size=128))
    x = _images(2, 1024, seed=1)
    if path != "eager":
        _compile_checked(det, x, det.detect(x), path)
    group = "detect cpu dual-disc 1024x1024 tiled (64px tiles) B=2 uint8"
    _bench(benchmark, group, lambda: det.detect(x), rounds=5)
    record_detect(group, path, benchmark, 2, TILED_GOAL)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info.update(method="dual-disc", threads=torch.get_num_threads(),
                                    vs_issue_baseline=2 / benchmark.stats.stats.median / TILED_BASELINE)
