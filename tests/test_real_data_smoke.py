"""Smoke runs of the real-data benchmarks (benchmarks/accuracy/elpv.py, surfaces.py) on tiny
subsets: the split rules, the baselines and the train -> detect pipeline of the chosen
configuration. ELPV's images are not shipped (CC BY-NC-SA, installed at benchmark time), so
the ELPV run reads a folder of the same layout written here (labels.csv + 300x300 PNG cells,
darker cells labelled defective)."""
from __future__ import annotations

import importlib
import json
import os
import sys

import numpy as np
import pytest  # noqa: F401
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "accuracy")


def _bench(name):
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    return importlib.import_module(name)


from models_helpers import one_thread  # noqa: E402,F401  (autouse: one torch thread)


def _fake_elpv(root, n_normal=24, n_defect=16, size=64):
    """An ELPV-shaped folder: labels.csv lines "images/cellNNNN.png  prob  type"."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images"))
    lines, i = [], 0
    for kind in ("mono", "poly"):
        for prob in [0.0] * (n_normal // 2) + [1.0] * (n_defect // 2) + [1 / 3, 2 / 3]:
            a = rng.normal(150, 10, (size, size))
            if prob == 1.0:
                y, x = rng.integers(0, size - 16, 2)
                a[y:y + 16, x:x + 16] -= 90  # a dark (inactive) region
            name = f"images/cell{i:04d}.png"
            Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(os.path.join(root, name))
            lines.append(f"{name}  {prob}  {kind}")
            i += 1
    with open(os.path.join(root, "labels.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root


def _tiny_tiled_dual_disc(image_size, labelled_defects):
    """A benchmark config ({"train_kwargs", "labelled_defects"}) that trains in a second."""
    return {"train_kwargs": {"method": "dual-disc", "image_size": image_size, "input_mode": "tile", "steps": 3,
                             "batch_size": 4, "hparams": {"width": 4, "d_width": 4, "max_width": 16},
                             "scoring": {"image_score": "patch_topn", "patch": 8, "stride": 4}},
            "labelled_defects": labelled_defects}


def test_elpv_split_follows_the_protocol(tmp_path):
    E = _bench("elpv_data")
    root = _fake_elpv(str(tmp_path / "elpv"))
    cells = E.read_labels(root)
    assert len(cells) == 40  # the 1/3 and 2/3 cells are dropped
    s = E.split(0, root)
    all_paths = [c.path for part in s.values() for c in part]
    assert len(all_paths) == len(set(all_paths)) == 40  # disjoint, complete
    assert not any(c.defect for c in s["train"]) and all(c.defect for c in s["train_defects"])
    for kind in ("mono", "poly"):  # stratified: every part holds both types
        assert any(c.kind == kind for c in s["test"]) and any(c.kind == kind for c in s["train"])
    test_y = E.labels(s["test"])
    assert 0 < test_y.sum() <= len(test_y) - test_y.sum()
    assert [c.path for c in E.split(0, root)["test"]] == [c.path for c in s["test"]]  # seeded
    assert [c.path for c in E.split(1, root)["test"]] != [c.path for c in s["test"]]


def test_elpv_benchmark_runs_the_chosen_pipeline(tmp_path):
    elpv = _bench("elpv")
    root = _fake_elpv(str(tmp_path / "elpv"))
    with open(os.path.join(BENCH, "results", "elpv", "chosen.json")) as f:
        chosen = json.load(f)
    config = {"train_kwargs": {**chosen["train_kwargs"], "image_size": 32, "steps": 4, "batch_size": 4,
                               "hparams": {"width": 4, "d_width": 4, "max_width": 16},
                               "scoring": {**chosen["train_kwargs"]["scoring"], "patch": 8, "stride": 4}},
              "labelled_defects": 4}
    head = chosen["train_kwargs"].get("defect_head")
    if head:  # the chosen head's settings, at a size that trains in a second (boxes scaled too)
        config["train_kwargs"]["defect_head"] = {**head, "steps": 4, "size": 32, "width": 4,
                                                 "paste": head.get("paste", 0) * 32 // head.get("size", 128)}
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(config))
    out = tmp_path / "out"
    assert elpv.main(["--config", str(cfg_path), "--seeds", "0", "--root", root, "--out", str(out),
                      "--cnn-steps", "4"]) == 0
    doc = json.loads((out / "cfg.json").read_text())
    run = doc["runs"][0]
    assert run["detector_info"]["anomalous_images"] == 4
    assert ("defect_head_seconds" in run["detector_info"]) == bool(head)
    for part in ("val", "test"):
        rows = run[part]
        assert set(rows["anomgan"]) == {"overall", "mono", "poly"}
        lo, hi = run[f"{part}_anomgan_ci95"]
        assert 0 <= lo <= rows["anomgan"]["overall"] <= hi <= 1 and hi - lo > 0
        assert {"mean intensity (dark)", "mean intensity (bright)", "image std",
                "median-filter residual (max)"} <= set(rows)
        # the dark-region cells: the darkness baseline must see them (a check of the baselines)
        assert rows["mean intensity (dark)"]["overall"] > 0.9
    assert "supervised CNN" in run["test"]


def test_elpv_val_only_run_saves_detectors_that_a_load_run_scores_on_test(tmp_path):
    """--val-only --save trains and scores validation only; --load then scores the same
    detectors on validation (identically) and on test, without training."""
    elpv = _bench("elpv")
    root = _fake_elpv(str(tmp_path / "elpv"))
    config = _tiny_tiled_dual_disc(image_size=32, labelled_defects=2)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(config))
    out, dets = tmp_path / "out", tmp_path / "dets"
    common = ["--config", str(cfg), "--seeds", "0", "--root", root, "--out", str(out), "--no-cnn"]
    assert elpv.main(common + ["--val-only", "--save", str(dets)]) == 0
    first = json.loads((out / "cfg_val.json").read_text())["runs"][0]
    assert "test" not in first and (dets / "seed0.anomgan").exists()
    assert elpv.main(common + ["--load", str(dets)]) == 0
    second = json.loads((out / "cfg.json").read_text())["runs"][0]
    assert second["loaded_from"] == str(dets)
    assert second["val"]["anomgan"] == first["val"]["anomgan"]
    assert set(second["test"]["anomgan"]) == {"overall", "mono", "poly"}
    assert second["train_seconds"] == first["detector_info"]["training_seconds"]


def test_elpv_label_count_refits_the_saved_head_and_compares_with_the_reference(tmp_path):
    """elpv_labels.py on a saved detector with a defect head: one entry per N, the head's
    settings kept, the paired comparison against the reference N, and the cached head inputs
    give the same scores on a second run."""
    elpv, labels = _bench("elpv"), _bench("elpv_labels")
    root = _fake_elpv(str(tmp_path / "elpv"), n_normal=40, n_defect=40)
    config = _tiny_tiled_dual_disc(image_size=32, labelled_defects=4)
    config["train_kwargs"]["defect_head"] = {"members": 1, "size": 32, "steps": 3, "width": 4, "paste": 8}
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(config))
    dets, out = tmp_path / "dets", tmp_path / "out"
    assert elpv.main(["--config", str(cfg), "--seeds", "0", "--root", root, "--out", str(tmp_path / "val"),
                      "--no-cnn", "--val-only", "--save", str(dets)]) == 0
    common = ["--detectors", str(dets), "--seed", "0", "--root", root, "--out", str(out),
              "--cache", str(tmp_path / "inputs.pt")]
    assert labels.main(common + ["--labelled", "2", "4", "--reference", "4"]) == 0
    doc = json.loads((out / "labels_seed0.json").read_text())
    assert doc["reference"] == 4 and doc["head"]["paste"] == 8 and doc["head"]["steps"] == 3
    assert set(doc["runs"]) == {"2", "4"} and doc["pool"] >= 4
    n_val = len(doc["labels"])
    for run in doc["runs"].values():
        assert set(run["fused"]) == {"overall", "mono", "poly"} and len(run["fused_scores"]) == n_val
    cmp = doc["runs"]["2"]["against_reference"]
    assert cmp["lower"] <= cmp["difference"] <= cmp["upper"] and 0 <= cmp["p_value"] <= 1
    assert "against_reference" not in doc["runs"]["4"]
    first = doc["runs"]["2"]["fused_scores"]
    assert labels.main(common + ["--labelled", "2"]) == 0  # from the cache, the same head
    assert json.loads((out / "labels_seed0.json").read_text())["runs"]["2"]["fused_scores"] == first
    with pytest.raises(SystemExit, match="the pool holds"):
        labels.main(common + ["--labelled", "10000"])


def test_surfaces_data_keeps_regions_disjoint_and_masks_cover_the_defects():
    S = _bench("surfaces")
    img = S.texture("brick")
    reg = S.regions(img)
    h, w = img.shape
    assert reg["train"].shape == (h, w // 2) and reg["test"].shape == (h // 2, w - w // 2)
    rng = np.random.default_rng(0)
    clean = S.crops(reg["test"], 1, rng)[0]
    planted, mask, what = S.plant(clean, rng, n_defects=2)
    assert mask.any() and len(what) == 2
    assert np.abs(planted - clean)[mask].max() >= S.SUBTLE / 2 - 1e-6  # every defect changes its pixels
    # outside the mask only a stain's faint tail may change the surface
    assert np.abs(planted - clean)[~mask].max() <= S.OBVIOUS / 2 + 1e-6


def test_surfaces_benchmark_smoke(tmp_path, monkeypatch):
    S = _bench("surfaces")
    monkeypatch.setattr(S, "TRAIN", 16)
    monkeypatch.setattr(S, "LABELLED", 4)
    monkeypatch.setattr(S, "VAL", 3)
    monkeypatch.setattr(S, "TEST", 4)
    monkeypatch.setattr(S, "CROP", 32)
    config = _tiny_tiled_dual_disc(image_size=16, labelled_defects=4)
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps(config))
    assert S.main(["--config", str(cfg), "--seeds", "0", "--textures", "grass", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "s.json").read_text())
    test = doc["runs"][0]["test"]
    assert set(test["anomgan"]) == {"image_auroc", "pixel_auroc", "aupro"}
    assert 0.0 <= test["anomgan"]["aupro"] <= 1.0
    assert "pixel_auroc" in test["median-filter residual (max)"]


def test_surfaces_benchmark_runs_the_segmenter_configuration(tmp_path, monkeypatch):
    """The recorded surfaces configuration (dual-disc tiles + segmenter), shrunk to seconds."""
    S = _bench("surfaces")
    for name, v in (("TRAIN", 16), ("LABELLED", 4), ("VAL", 3), ("TEST", 4), ("CROP", 32)):
        monkeypatch.setattr(S, name, v)
    with open(os.path.join(BENCH, "results", "surfaces", "dual_disc_tile64_segmenter.json")) as f:
        chosen = json.load(f)
    kw = chosen["train_kwargs"]
    config = {"train_kwargs": {**kw, "image_size": 16, "steps": 2, "batch_size": 4,
                               "hparams": {"width": 4, "d_width": 4, "max_width": 16},
                               "scoring": {**kw["scoring"], "n": 5, "tile_overlap": 8},
                               "segmenter": {**kw["segmenter"], "steps": 3, "width": 4}},
              "labelled_defects": 4}
    cfg = tmp_path / "seg.json"
    cfg.write_text(json.dumps(config))
    assert S.main(["--config", str(cfg), "--seeds", "0", "--textures", "brick", "--out", str(tmp_path)]) == 0
    run = json.loads((tmp_path / "seg.json").read_text())["runs"][0]
    assert "segmenter_seconds" in run["info"]
    for part in ("val", "test"):
        assert set(run[part]["anomgan"]) == {"image_auroc", "pixel_auroc", "aupro"}


def test_surfaces_ceiling_trains_on_the_benchmark_defects_and_on_blobs(tmp_path, monkeypatch):
    """benchmarks/accuracy/surfaces_ceiling.py: the oracle batches carry the benchmark's own
    planted defects and their masks (half the crops), and both generators run end to end."""
    S, C = _bench("surfaces"), _bench("surfaces_ceiling")
    for name, v in (("TRAIN", 4), ("LABELLED", 2), ("VAL", 3), ("TEST", 2), ("CROP", 32)):
        monkeypatch.setattr(S, name, v)
    region = S.regions(S.texture("grass"))["train"]
    import torch
    x = torch.from_numpy(S.crops(region, 6, np.random.default_rng(0), 32))[:, None]
    xs, m = C.oracle_anomalies(np.random.default_rng(1))(x, x.flip(0), torch.Generator())
    assert xs.shape == (6, 1, 32, 32) and m.shape == (6, 32, 32)
    assert all(m[i].sum() > 0 for i in (0, 2, 4)) and all(m[i].sum() == 0 for i in (1, 3, 5))
    assert torch.equal(xs[1::2], x[1::2])  # the odd crops stay clean
    changed = (xs - x).abs()[:, 0] > 0
    assert changed[0::2][m[0::2] > 0].all() and not changed[1::2].any()  # every masked pixel moved
    out = tmp_path / "ceiling.jsonl"
    for gen in ("oracle", "blobs"):
        assert C.main(["--texture", "grass", "--generator", gen, "--steps", "2", "--width", "4",
                       "--size", "32", "--batch-size", "4", "--out", str(out)]) == 0
    assert C.main(["--texture", "grass", "--steps", "2", "--width", "4", "--size", "32", "--batch-size", "4",
                   "--train-rows", "0:256", "--out", str(out)]) == 0
    for bad in ("100:200", "0:8"):  # unseen rows on both sides (a seam); too few rows for a crop
        with pytest.raises(SystemExit):
            C.main(["--texture", "grass", "--steps", "1", "--train-rows", bad, "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["generator"] for r in rows] == ["oracle", "blobs", "oracle"]
    assert "unseen rows of the train region" in rows[2] and "unseen rows of the train region" not in rows[0]
    held = C.train_region_split("grass", 0)  # validation-shaped crops of the training region
    assert held["val"].shape == (6, 1, 32, 32) and held["val_masks"][3:].any(axis=(1, 2)).all()
    assert not held["val_masks"][:3].any()
    for r in rows:
        for split in ("val", "train-region"):
            m = r[split]
            assert 0.0 <= m["pixel_auroc"] <= 1.0 and 0.0 <= m["aupro"] <= 1.0 and 0.0 <= m["image_auroc"] <= 1.0
            assert isinstance(m["per_defect_pixel_auroc"], dict)
            assert "pixel_auroc" in m["baselines"]["median-filter residual (max)"]
