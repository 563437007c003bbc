"""Smoke runs of the accuracy benchmarks (benchmarks/accuracy/): one class, a tiny budget, one
seed, on the real MNIST sample the package ships (anomgan/demo_data/mnist_sample.npz: 5,000
training and 2,000 test digits). Each checks that the pipeline trains, scores the test data
once, writes its JSON and Markdown table, and separates the anomalies clearly better than
chance. Digit 1 is the normal class: the easiest one, so a few dozen steps suffice."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "accuracy")
SAMPLE = os.path.join(ROOT, "anomgan", "demo_data", "mnist_sample.npz")


def _bench(name):
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    return importlib.import_module(name)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _read(out, stem):
    with open(os.path.join(out, f"{stem}.json"), encoding="utf-8") as fh:
        doc = json.load(fh)
    with open(os.path.join(out, f"{stem}.md"), encoding="utf-8") as fh:
        md = fh.read()
    return doc, md


def test_one_class_smoke(tmp_path):
    mod = _bench("one_class")
    mod.main(["--data", SAMPLE, "--methods", "dual-disc", "--digits", "1", "--seeds", "1",
              "--scale", "0.1", "--test-subset", "400", "--out", str(tmp_path)])
    doc, md = _read(tmp_path, "one_class")
    (run,) = doc["runs"]
    assert run["method"] == "dual-disc" and run["digit"] == 1 and run["n_test"] == 400
    assert run["n_train_anomalous"] > 0 and run["chosen_steps"] in (25, 50, 75, 100)
    assert run["test_auroc"] > 0.6, run
    assert "| dual-disc (ours) |" in md and "Kim et al. (paper, Table 5)" in md and "99.7" in md


def test_noisy_data_smoke(tmp_path):
    mod = _bench("noisy_data")
    mod.main(["--data", SAMPLE, "--methods", "noisy-gan", "--digits", "1", "--rhos", "5",
              "--ks", "50", "--seeds", "1", "--scale", "0.25", "--test-subset", "150",
              "--val-size", "60",
              "--out", str(tmp_path)])
    doc, md = _read(tmp_path, "noisy_data")
    (run,) = doc["runs"]
    assert run["method"] == "noisy-gan" and run["k"] == 50 and run["n_noise"] > 0
    assert run["n_train_anomalous"] == 50
    assert run["test_auroc"] > 0.6, run
    assert "| noisy-gan | 50 |" in md
    assert os.path.getsize(os.path.join(tmp_path, "noisy_data.png")) > 1000


def test_ir_mnist_smoke(tmp_path):
    mod = _bench("ir_mnist")
    mod.main(["--data", SAMPLE, "--methods", "dual-disc", "--seeds", "1", "--scale", "0.05",
              "--test-puzzles", "2", "--out", str(tmp_path)])
    doc, md = _read(tmp_path, "ir_mnist")
    (run,) = doc["runs"]
    assert 0.0 < doc["anomaly_pixel_fraction"] < 0.1
    assert run["pixel_auroc"] > 0.6, run
    assert 0.0 <= run["stroke_auroc"] <= 1.0 and 0.0 <= run["cell_auroc"] <= 1.0
    base = doc["baseline_input_intensity"]
    assert base["pixel_auroc"] > 0.8 and 0.3 < base["stroke_auroc"] < 0.7   # strokes vs background
    assert "| dual-disc |" in md and "baseline: map = input intensity" in md
    assert os.path.getsize(os.path.join(tmp_path, "ir_mnist.png")) > 1000


def test_val_only_never_scores_the_test_set_and_set_changes_the_budget(tmp_path, monkeypatch):
    """--val-only trains and selects on validation data and reports the validation AUROC; the
    test images are never scored. --set changes the budget and the change is recorded."""
    mod = _bench("one_class")
    common = _bench("common")
    scored = []
    real = common.score

    def spy(det, x):
        scored.append(int(x.shape[0]))
        return real(det, x)

    monkeypatch.setattr(common, "score", spy)
    mod.main(["--data", SAMPLE, "--methods", "dual-disc", "--digits", "1", "--seeds", "1",
              "--scale", "0.05", "--test-subset", "400", "--val-size", "50", "--val-only",
              "--set", "dual-disc.steps=20", "--set", "dual-disc.hp.lr=0.002",
              "--set", "dual-disc.lr_decay_every=10", "--set", 'dual-disc.augment={"hflip": true}',
              "--set", "dual-disc.select_at=[0.5, 1.0]",
              "--out", str(tmp_path)])
    doc, md = _read(tmp_path, "one_class")
    (run,) = doc["runs"]
    assert doc["metric"] == "val_auroc" and "test_auroc" not in run
    assert scored == [50, 50] and 400 not in scored                  # two selection points, no test
    b = doc["budgets"]["dual-disc"]
    assert (b["steps"], b["hparams"]["lr"], b["lr_decay_every"], b["augment"], b["select_at"]) == \
        (20, 0.002, 10, {"hflip": True}, [0.5, 1.0])
    assert [c["steps"] for c in run["val_curve"]] == [10, 20]
    assert "VALIDATION AUROC" in md
    for bad, match in ((["--set", "dual-disc.nope=1"], "not a budget field"),
                       (["--set", "dual.steps=1"], "not one of"),
                       (["--set", "dual-disc.steps"], "METHOD.FIELD=VALUE")):
        with pytest.raises(ValueError, match=match):
            mod.main(["--data", SAMPLE, "--methods", "dual-disc", "--digits", "1", "--seeds", "1",
                      "--out", str(tmp_path), *bad])


def test_noisy_data_render_only_merges_runs_of_several_processes(tmp_path):
    """--render-only merges the runs of several noisy_data.json files (one process per rho)
    into one table and plot, without training."""
    mod = _bench("noisy_data")

    def doc(rho, aurocs):
        runs = [{"method": m, "digit": 8, "rho_percent": rho, "k": k, "seed": s, "test_auroc": a,
                 "val_auroc": a} for (m, k, a) in aurocs for s in range(3)]
        return {"date_utc": "2026-11-27 10:00 UTC", "machine": "test", "argv": ["noisy_data.py"],
                "budget": "cpu", "seeds": 3, "digits": [8], "rhos_percent": [rho], "ks": [0, 50],
                "n_test": 1000, "metric": "test_auroc", "runs": runs, "elapsed_s": 1.0}

    paths = []
    for rho, a in ((0.0, 0.9), (5.0, 0.7)):
        paths.append(str(tmp_path / f"p{rho}.json"))
        with open(paths[-1], "w", encoding="utf-8") as fh:
            json.dump(doc(rho, [("anogan", 0, a), ("noisy-gan", 50, a + 0.05)]), fh)
    merged = mod.main(["--render-only", *paths, "--out", str(tmp_path / "m")])
    assert len(merged["runs"]) == 12 and merged["rhos_percent"] == [0.0, 5.0]
    _, md = _read(tmp_path / "m", "noisy_data")
    assert "| anogan | — | 90.0 ± 0.0 | 70.0 ± 0.0 |" in md
    assert "| noisy-gan | 50 | 95.0 ± 0.0 | 75.0 ± 0.0 |" in md
    assert os.path.getsize(tmp_path / "m" / "noisy_data.png") > 1000


def test_one_class_render_only_merges_classes_and_refuses_different_budgets(tmp_path):
    """--render-only merges one_class.json files of several processes (classes split between
    them) into one table whose mean is over the merged classes; files trained with different
    budgets for the same method are refused."""
    mod = _bench("one_class")

    def write(name, digits, auroc, steps=1000):
        runs = [{"method": "dual-disc", "digit": d, "seed": s, "test_auroc": auroc + 0.01 * s,
                 "val_auroc": auroc} for d in digits for s in range(3)]
        doc = {"date_utc": "2026-11-27 10:00 UTC", "machine": "test", "argv": ["one_class.py"],
               "data": "fashion", "budget": "cpu", "seeds": 3, "protocol": "one_class",
               "dataset": "fashion-mnist", "digits": digits, "n_test": 1000, "metric": "test_auroc",
               "paper_table5": {"Kim et al.": 98.6}, "budgets": {"dual-disc": {"steps": steps}},
               "runs": runs, "elapsed_s": 1.0}
        with open(tmp_path / name, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        return str(tmp_path / name)

    a, b = write("a.json", [0, 1], 0.9), write("b.json", [2], 0.6)
    merged = mod.main(["--render-only", a, b, "--out", str(tmp_path / "m")])
    assert merged["digits"] == [0, 1, 2] and len(merged["runs"]) == 9
    _, md = _read(tmp_path / "m", "one_class")
    # per seed s: mean over classes = (0.9 + 0.9 + 0.6) / 3 + 0.01 s = 0.8 + 0.01 s
    assert "| dual-disc (ours) | 91.0 ± 1.0 | 91.0 ± 1.0 | 61.0 ± 1.0 | 81.0 ± 1.0 |" in md
    c = write("c.json", [3], 0.6, steps=3000)
    with pytest.raises(ValueError, match="dual-disc budget"):
        mod.main(["--render-only", a, c, "--out", str(tmp_path / "n")])


def test_val_curve_smoke(capsys):
    mod = _bench("val_curve")
    curve = mod.main(["--data", SAMPLE, "--digit", "1", "--steps", "6", "--every", "3",
                      "--hparam", "g_norm=batch", "--hparam", "width=4"])
    assert [r["step"] for r in curve] == [3, 6]
    assert all(0.0 <= r["val_auroc"] <= 1.0 and r["losses"] for r in curve)
    assert "'g_norm': 'batch'" in capsys.readouterr().out


def test_build_sets_protocols_are_disjoint():
    """The protocols' index sets: validation, training and labelled anomalies never overlap,
    and the contamination rate is what was asked."""
    nd = _bench("noisy_data")
    y = torch.arange(1000) % 10
    x = torch.rand(1000, 1, 32, 32)
    s = nd.build_sets(x, y, 3, 0.10, 20, seed=0)
    tr, val, lab = set(s["normal"].tolist()), set(s["val"].tolist()), set(s["labelled"].tolist())
    assert not (tr & val) and not (tr & lab) and not (val & lab)
    assert len(s["noise"]) == round(0.1 / 0.9 * 90) and all(int(y[i]) != 3 for i in s["noise"])
    assert len(lab) == 20 and all(int(y[i]) != 3 for i in lab)
    oc = _bench("one_class")
    s = oc.build_sets(x, y, 3, seed=0)
    tr, an, val = set(s["normal"].tolist()), set(s["anomalous"].tolist()), set(s["val"].tolist())
    assert not (tr & an) and not (tr & val) and not (an & val)
    assert all(int(y[i]) == 3 for i in tr) and all(int(y[i]) != 3 for i in an)
    assert len(an) <= len(tr) and len(set(int(y[i]) for i in an)) == 9


def test_fashion_mnist_gets_its_own_cpu_budget(tmp_path):
    """dual-disc's CPU budget on Fashion-MNIST (chosen on validation curves): 6000 steps, lr
    halved every 2000, validation every 1000; on MNIST 1000 steps at 250, 500, 750, 1000. The
    data path decides, and the budget used is recorded in the output."""
    common = _bench("common")
    mnist = common.budget_for("cpu", "dual-disc")
    fashion = common.budget_for("cpu", "dual-disc", dataset="fashion-mnist")
    assert (mnist.steps, mnist.lr_decay_every) == (1000, None)
    assert common.selection_points("dual-disc", mnist) == [250, 500, 750, 1000]
    assert (fashion.steps, fashion.lr_decay_every) == (6000, 2000)
    assert common.selection_points("dual-disc", fashion) == [1000, 2000, 3000, 4000, 5000, 6000]
    assert common.budget_for("cpu", "ganomaly", dataset="fashion-mnist").steps == 600
    assert common.dataset_name("/usr/share/datasets/fashion-mnist") == "fashion-mnist"
    assert common.dataset_name(SAMPLE) == "mnist"
    fake_fashion = tmp_path / "fashion-mnist-sample.npz"      # MNIST digits under a Fashion name
    shutil.copyfile(SAMPLE, fake_fashion)
    doc = _bench("one_class").main(
        ["--data", str(fake_fashion), "--methods", "dual-disc", "--digits", "1", "--seeds", "1",
         "--scale", "0.005", "--val-size", "40", "--val-only", "--out", str(tmp_path / "out")])
    b = doc["budgets"]["dual-disc"]
    assert doc["dataset"] == "fashion-mnist" and (b["steps"], b["lr_decay_every"]) == (30, 10)
    assert [c["steps"] for c in doc["runs"][0]["val_curve"]] == [5, 10, 15, 20, 25, 30]


@pytest.mark.parametrize("method", ["dual-disc", "noisy-gan"])
def test_paper_budget_runs_when_shortened(tmp_path, method):
    """--budget paper (the papers' networks, augmentation, lr decay and selection points; meant
    for a GPU) goes through the same pipeline: shortened with --set, it trains, selects on
    validation data and records the paper budget with the change."""
    common = _bench("common")
    for m in common.METHOD_NAMES:
        b = common.budget_for("paper", m)
        points = common.selection_points(m, b)
        assert 0 < points[0] and points[-1] == b.steps and len(points) == len(b.select_at)
    short = ["--set", f"{method}.steps=8", "--set", f"{method}.batch_size=8"]
    if method == "dual-disc":
        short += ["--set", "dual-disc.lr_decay_every=4"]
    else:
        short += ["--set", "noisy-gan.encoder_steps=4", "--set", "noisy-gan.search_steps=2"]
    doc = _bench("one_class").main(
        ["--data", SAMPLE, "--methods", method, "--digits", "1", "--seeds", "1", "--budget", "paper",
         "--val-size", "20", "--val-only", "--out", str(tmp_path), *short])
    b = doc["budgets"][method]
    assert doc["budget"] == "paper" and b["steps"] == 8 and b["batch_size"] == 8
    assert b["augment"] == ({"crop": 2} if method == "dual-disc" else None)
    (run,) = doc["runs"]
    assert 0.0 <= run["val_auroc"] <= 1.0 and run["chosen_steps"] <= 8


def test_search_steps_smoke(tmp_path):
    """benchmarks/accuracy/search_steps.py on a tiny budget: both protocols, both starts, every
    step count scored on validation and test images, the choice made on validation, the early
    stopping table, the plot; its scores are the detector's; a rerun takes the models from the
    cache and trains nothing."""
    mod = _bench("search_steps")
    argv = ["--data", SAMPLE, "--p1-digits", "1", "--p2-digit", "1", "--seeds", "1",
            "--scale", "0.25", "--val-size", "30", "--test-size", "40", "--steps", "0,3,20",
            "--tols", "1e-3", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    doc = mod.main(argv)
    assert [m["protocol"] for m in doc["models"]] == ["p1", "p2"]
    assert all(m["train_s"] is not None and (m["n_val"], m["n_test"]) == (30, 40)
               for m in doc["models"])
    assert len(doc["runs"]) == 2 * 2 * 3                       # models x starts x step counts
    for r in doc["runs"]:
        assert 0.0 <= r["val_auroc"] <= 1.0 and 0.0 <= r["test_auroc"] <= 1.0
        assert ("tol" in r) == (r["start"] == "encoder" and r["steps"] >= mod.TOL_MIN_STEPS)
    best = max(r["val_auroc"] for r in doc["runs"] if r["start"] == "encoder")
    assert best > 0.6, doc["runs"]
    assert doc["choice"]["chosen_steps"] in (0, 3, 20)
    _, md = _read(tmp_path / "out", "search_steps")
    assert "| 20 |" in md and "Chosen on validation" in md and "| 20 | 0.001 | p1 |" in md
    assert os.path.getsize(tmp_path / "out" / "search_steps.png") > 1000

    # the benchmark's scores are the detector's own
    import glob

    from anomgan.detector import Detector, ScoringConfig
    from anomgan.models import get_method

    blob = torch.load(sorted(glob.glob(str(tmp_path / "cache" / "p1_*.pt")))[0], weights_only=True)
    m = get_method("noisy-gan").from_stored(blob["hparams"])
    m.load_state_dict(blob["state"])
    x = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for steps in (0, 3):
        ours, _ = mod.search_scores(m, x, steps, "encoder")
        det = Detector(m, scoring=ScoringConfig(search_steps=steps, search_precision="float32"))
        torch.testing.assert_close(torch.from_numpy(ours).float(), det.score_tensor(x)[0],
                                   rtol=1e-5, atol=1e-6)

    again = mod.main(argv)
    assert all(m["train_s"] is None for m in again["models"])
    assert again["runs"] == doc["runs"]


def test_search_steps_early_stopping_replays_the_searchs_rule():
    """early_stop() on a search's recorded losses gives what latent_search(tol=...) gives."""
    mod = _bench("search_steps")
    from anomgan.models.networks import Discriminator, Generator
    from anomgan.scoring.search import latent_search

    torch.manual_seed(0)
    g, d = Generator(8, 16, 1, 8, 16).eval(), Discriminator(16, 1, 8, 16).eval()
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z0 = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    full = latent_search(g, d.features, x, z0=z0, steps=80, lr=0.02, record_loss=True)
    for tol in (1e-2, 1e-3):
        stopped = latent_search(g, d.features, x, z0=z0, steps=80, lr=0.02, tol=tol)
        scores, taken = mod.early_stop(full.loss_history.numpy(), tol)
        assert taken.tolist() == stopped.steps_taken.tolist()
        torch.testing.assert_close(torch.from_numpy(scores).float(), stopped.loss,
                                   rtol=1e-5, atol=1e-6)
