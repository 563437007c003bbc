"""The demos run end to end (tiny budgets here; the real budgets are the README's main job)."""
import numpy as np
import torch

from anomgan.apps import demo


def test_mnist_split_follows_the_protocol():
    d = demo.mnist_split(digit=3, seed=0)
    assert d["train"].shape == (400, 1, 32, 32) and d["validation"].shape == (100, 1, 32, 32)
    assert d["anomalous"].shape == (50, 1, 32, 32)
    assert (d["test_digits"][d["test_labels"] == 0] == 3).all()
    assert (d["test_digits"][d["test_labels"] == 1] != 3).all()
    assert 0.0 <= float(d["train"].min()) and float(d["train"].max()) <= 1.0


def test_planted_defects_are_micro_defects():
    rng = np.random.default_rng(0)
    surface = np.full((1024, 1024), 0.5, np.float32)
    out, mask = demo.plant_defects(surface, rng)
    assert 0 < mask.mean() < 0.01  # well under 1% of the pixels
    assert np.abs(out - surface)[mask].min() > 0.1 and (out == surface)[~mask].all()


def test_mnist_demo_runs(tmp_path, capsys):
    assert demo.run_mnist(out_dir=str(tmp_path), steps=4, search_steps=2, progress=False) == 0
    out = capsys.readouterr().out
    assert "noisy-gan AUROC" in out and "anogan" in out
    assert (tmp_path / "report.html").exists() and (tmp_path / "noisy-gan.anomgan").exists()
    html = (tmp_path / "report.html").read_text()
    assert html.count('<img class="overlay"') == 380


def test_high_res_demo_runs(tmp_path, capsys):
    torch.set_num_threads(2)
    assert demo.run_high_res(out_dir=str(tmp_path), steps=4, progress=False) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "1024x1024" in out
    html = (tmp_path / "report.html").read_text()
    assert html.count('<img class="overlay"') == 8
