"""Benchmark helpers: side-by-side timing of a kernel backend and the pure-PyTorch reference
in one run, a measured copy bandwidth for the memory floor, and a closing ratio table.

Run:  python -m pytest benchmarks --benchmark-only  (add -k to pick one op)
"""
import os
import time
from collections import defaultdict

os.environ.setdefault("TRITON_INTERPRET", "0")  # never benchmark the interpreter

import pytest  # noqa: E402
import torch  # noqa: E402

from bench_machine import cpu_name_and_units  # noqa: E402

_RESULTS = defaultdict(dict)  # group -> {label: (median_s, bytes_moved)}
_BANDWIDTH = {}
_LINES = []  # free-form result lines of benchmarks (the summary_line fixture), printed at the end
_DETECT = defaultdict(dict)  # group -> {path: (median_s, images, goal or None)}


def copy_bandwidth(device: str) -> float:
    """Bytes/s of a large tensor copy (bytes read + bytes written): measured again at every call
    (so it sees the machine as the neighbouring benchmark did); the best seen so far is kept."""
    n = 64 * 2**20  # 256 MB of float32
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - t0)
    bw = 2 * src.numel() * src.element_size() / min(times)
    _BANDWIDTH[device] = max(bw, _BANDWIDTH.get(device, 0.0))
    return _BANDWIDTH[device]


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_median(benchmark) -> float | None:
    """Median seconds of a finished benchmark; None under ``--benchmark-disable`` (pytest-benchmark
    then runs each function once, untimed: the benchmarks become smoke tests of their checks)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


@pytest.fixture
def record():
    """record(group, label, benchmark, bytes_moved, device): keep a finished benchmark's median."""

    def _record(group, label, benchmark, bytes_moved, device):
        if bench_median(benchmark) is None:
            return
        _RESULTS[group][label] = (bench_median(benchmark), bytes_moved, device)
        benchmark.extra_info.update(role="kernel", label=label, reference="torch")

    return _record


@pytest.fixture
def record_detect():
    """record_detect(group, path, benchmark, images, goal=None): keep an end-to-end detect
    benchmark's median; "eager" is each group's reference; ``goal``: the speed-up over eager
    the issue asks of this group's best path (shown in the closing table)."""

    def _record(group, path, benchmark, images, goal=None):
        med = bench_median(benchmark)
        if med is None:
            return
        benchmark.extra_info.update(role="detect", label=path, reference="eager",
                                    images_per_s=images / med, images=images)
        _DETECT[group][path] = (med, images, goal)

    return _record


def machine_line() -> str:
    return (f"machine: {cpu_name_and_units()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
            + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))


def pytest_benchmark_update_machine_info(config, machine_info):
    """Saved runs (--benchmark-autosave) carry the CPU's matrix units, which compare.py shows."""
    machine_info["anomgan_cpu"] = cpu_name_and_units()


def _detect_summary(tr):
    tr.section("anomgan: detect paths vs eager (same run)")
    tr.write_line(machine_line())
    tr.write_line(f"{'group':52s} {'path':12s} {'median ms':>10s} {'images/s':>10s} "
                  f"{'vs eager':>9s} {'goal':>6s}")
    for group, rows in _DETECT.items():
        ref = rows.get("eager", (None,))[0]
        for path, (med, n, goal) in rows.items():
            ratio = f"{ref / med:8.2f}x" if ref else "      -"
            g = f"{goal:5.1f}x" if goal and path != "eager" else ""
            tr.write_line(f"{group:52s} {path:12s} {med * 1e3:10.2f} {n / med:10.1f} "
                          f"{ratio:>9s} {g:>6s}")


@pytest.fixture
def summary_line():
    """summary_line(text): print ``text`` in the closing summary (pytest captures what a test
    writes while it runs)."""
    return _LINES.append


def pytest_terminal_summary(terminalreporter):
    if _LINES:
        terminalreporter.section("anomgan: benchmark results")
        for line in _LINES:
            terminalreporter.write_line(line)
    if _DETECT:
        _detect_summary(terminalreporter)
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("anomgan: kernel vs pure-PyTorch reference (same run)")
    tr.write_line(machine_line())
    for dev, bw in _BANDWIDTH.items():
        tr.write_line(f"measured copy bandwidth ({dev}): {bw / 1e9:.1f} GB/s (read + write)")
    tr.write_line(f"{'group':44s} {'backend':8s} {'median ms':>10s} {'vs torch':>9s} "
                  f"{'floor ms':>9s} {'% of copy bw':>12s}")
    for group, rows in _RESULTS.items():
        ref = rows.get("torch", (None,))[0]
        for label, (med, nbytes, dev) in rows.items():
            bw = _BANDWIDTH.get(dev)
            floor = nbytes / bw if bw and nbytes else float("nan")
            ratio = f"{ref / med:8.2f}x" if ref else "      -"
            tr.write_line(f"{group:44s} {label:8s} {med * 1e3:10.3f} {ratio:>9s} "
                          f"{floor * 1e3:9.3f} {100 * floor / med:11.1f}%")
