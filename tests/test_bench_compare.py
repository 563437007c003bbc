"""benchmarks/compare.py on two small synthetic saved runs (the shape of pytest-benchmark's
--benchmark-autosave JSON)."""
import importlib.util
import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "bench_compare", os.path.join(HERE, "..", "benchmarks", "compare.py"))
compare = importlib.util.module_from_spec(spec)
sys.modules["bench_compare"] = compare  # dataclasses look their module up there
spec.loader.exec_module(compare)


def bench(group, name, median, params=None, extra=None):
    return {"group": group, "name": name, "fullname": f"benchmarks/x.py::{name}",
            "params": params, "param": None, "extra_info": extra or {},
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 5,
                        "max_time": 1.0, "min_time": 5e-06, "warmup": False},
            "stats": {"min": median * 0.9, "max": median * 1.2, "mean": median, "stddev": 0.0,
                      "rounds": 5, "median": median, "iqr": 0.0, "q1": median, "q3": median,
                      "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0", "ld15iqr": median,
                      "hd15iqr": median, "ops": 1 / median, "total": 5 * median, "iterations": 1}}


def run(commit, date, medians, cpu_units=None):
    k = "patch_topn_l1 fwd cpu 8x1x1024x1024"
    d = "detect cpu ganomaly 32x32 B=64 uint8"
    s = "latent search cpu DCGAN-64 B=64, 10 steps/round"
    benches = [
        # kernels: one recorded through conftest's extra_info, one known only by its params
        bench(k, "test_fwd[cpu-torch]", medians["torch"], {"device": "cpu", "backend": "torch"},
              {"role": "kernel", "label": "torch", "reference": "torch"}),
        bench(k, "test_fwd[cpu-cpp]", medians["cpp"], {"device": "cpu", "backend": "cpp"}),
        bench(d, "test_detect_32[ganomaly-eager]", medians["eager"], {"name": "ganomaly", "path": "eager"},
              {"role": "detect", "label": "eager", "reference": "eager", "images_per_s": 64 / medians["eager"]}),
        bench(d, "test_detect_32[ganomaly-compiled]", medians["compiled"],
              {"name": "ganomaly", "path": "compiled"},
              {"role": "detect", "label": "compiled", "reference": "eager"}),
        bench(s, "test_bench_plain_loop", 0.9, None, {"role": "search", "label": "loop", "reference": "loop"}),
        bench(s, "test_bench_latent_search", 0.5, None,
              {"role": "search", "label": "search", "reference": "loop"}),
        bench("misc", "test_other", 1.0),  # no reference at all: ignored
    ]
    if "ort" in medians:
        benches.append(bench(d, "test_detect_32[ganomaly-onnxruntime]", medians["ort"],
                             {"name": "ganomaly", "path": "onnxruntime"}))
    machine = {"node": "box", "processor": "x86_64", "machine": "x86_64", "cpu": {"brand_raw": "AMD EPYC"}}
    if cpu_units:  # what benchmarks/conftest.py adds to a saved run
        machine["anomgan_cpu"] = cpu_units
    return {"machine_info": machine,
            "commit_info": {"id": commit, "dirty": False}, "benchmarks": benches,
            "datetime": date, "version": "5.3.1"}


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    root.mkdir(parents=True)
    a = run("aaaaaaaaaaaa", "2026-11-30T10:00:00", {"torch": 0.08, "cpp": 0.008, "eager": 0.05,
                                                   "compiled": 0.04})
    b = run("bbbbbbbbbbbb", "2026-11-30T11:00:00", {"torch": 0.08, "cpp": 0.01, "eager": 0.05,
                                                   "compiled": 0.02, "ort": 0.025},
            cpu_units="Intel Xeon (AMX-INT8, AMX-BF16)")
    (root / "0001_aaaaaaa_20261130_100000.json").write_text(json.dumps(a))
    (root / "0002_bbbbbbb_20261130_110000.json").write_text(json.dumps(b))
    return tmp_path / ".benchmarks"


def test_ratios_changes_and_missing_rows(storage):
    head_a, rows_a = compare.load_run(compare.resolve("0001", storage))
    head_b, rows_b = compare.load_run(compare.resolve("0002", storage))
    assert head_a["commit"] == "aaaaaaaaaa" and head_a["machine"] == "AMD EPYC"
    assert head_b["machine"] == "Intel Xeon (AMX-INT8, AMX-BF16)"  # the matrix units, where saved
    table = {(r["kind"], r["label"]): r for r in compare.compare(rows_a, rows_b)}
    assert set(table) == {("kernel", "cpp"), ("detect", "compiled"), ("detect", "onnxruntime"),
                          ("search", "search")}
    cpp = table[("kernel", "cpp")]
    assert cpp["reference"] == "torch"
    assert cpp["ratio_a"] == pytest.approx(10.0) and cpp["ratio_b"] == pytest.approx(8.0)
    assert cpp["change"] == pytest.approx(0.8)
    comp = table[("detect", "compiled")]
    assert comp["reference"] == "eager" and comp["ratio_a"] == pytest.approx(1.25)
    assert comp["ratio_b"] == pytest.approx(2.5) and comp["change"] == pytest.approx(2.0)
    ort = table[("detect", "onnxruntime")]
    assert ort["ratio_a"] is None and ort["ratio_b"] == pytest.approx(2.0) and ort["change"] is None
    assert table[("search", "search")]["ratio_a"] == pytest.approx(1.8)


def test_main_prints_the_table_and_flags_regressions(storage, capsys):
    assert compare.main(["0001", "0002", "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("A: 0001_aaaaaaa") and "commit aaaaaaaaaa" in lines[0]
    cpp = next(line for line in lines if line.startswith("kernel") and " cpp " in line)
    assert "10.00x" in cpp and "8.00x" in cpp and "0.80 !" in cpp  # fell below 0.9 of A's
    comp = next(line for line in lines if " compiled " in line)
    assert "1.25x" in comp and "2.50x" in comp and "2.00" in comp and "!" not in comp
    ort = next(line for line in lines if " onnxruntime " in line)
    assert "       -" in ort and "2.00x" in ort


def test_paths_and_errors(storage, tmp_path, capsys):
    path = next((storage / "Linux-CPython-3.11-64bit").glob("0001_*.json"))
    assert compare.main([str(path), "0002", "--storage", str(storage)]) == 0
    assert compare.main(["0009", "0002", "--storage", str(storage)]) == 2
    assert "no saved run 0009" in capsys.readouterr().err
    assert compare.main(["000", "0002", "--storage", str(storage)]) == 2  # ambiguous prefix
    assert "matches 2 saved runs" in capsys.readouterr().err


def _load_machine():
    spec = importlib.util.spec_from_file_location("bench_machine", os.path.join(HERE, "..", "benchmarks", "bench_machine.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_name_and_units_reads_the_first_processor(tmp_path):
    machine = _load_machine()
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"
                    "flags\t\t: fpu avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n\n"
                    "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    assert machine.cpu_name_and_units(str(info)) == \
        "Intel(R) Xeon(R) Processor (AMX-INT8, AMX-BF16, AVX512-VNNI, AVX512-BF16)"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx512_vnni avx512_bf16\n")
    assert machine.cpu_name_and_units(str(info)) == "AMD EPYC 9R14 (AVX512-VNNI, AVX512-BF16)"
    info.write_text("processor\t: 0\nmodel name\t: Old\nflags\t\t: fpu sse2 avx2\n")
    assert machine.cpu_name_and_units(str(info)) == "Old (no int8/bf16 matrix units)"
    missing = machine.cpu_name_and_units(str(tmp_path / "absent"))  # not Linux: the platform's name
    assert missing.endswith("(no int8/bf16 matrix units)") and len(missing) > len("(no int8/bf16 matrix units)")
