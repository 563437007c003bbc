"""input_mode ("resize" / "tile"): chosen at training time, stored in the detector, and used
alike by train, calibrate and detect; and fit's time budget."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import anomgan
from anomgan.data.ingest import resize
from anomgan.detector import Detector
from anomgan.training import fit
from anomgan.training.config import parse_duration
from anomgan.training.loop import random_crops

from models_helpers import TINY, one_thread  # noqa: F401

DD = {"hparams": TINY["ganomaly"], "method": "ganomaly", "batch_size": 4, "progress": False}


def _images(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, h, w, generator=g)


def test_random_crops_are_crops_of_the_chosen_images():
    x = torch.arange(2 * 1 * 9 * 7, dtype=torch.float32).view(2, 1, 9, 7)
    g = torch.Generator().manual_seed(3)
    c = random_crops(x, torch.tensor([1, 0, 1]), 4, g)
    assert c.shape == (3, 1, 4, 4)
    for row, i in zip(c, (1, 0, 1)):
        v = int(row[0, 0, 0])  # the crop's top-left value locates it in image i
        y, xx = divmod(v - i * 63, 7)
        assert torch.equal(row, x[i, :, y:y + 4, xx:xx + 4])


def test_resize_mode_detect_resizes_like_training_and_maps_come_back_at_input_size():
    x = _images(6, 40, 40)
    det = anomgan.train(x, validation_fraction=0, image_size=16, steps=2, **DD)
    assert det.input_mode == "resize"  # image_size changed their size: picked automatically
    res = det.detect(x[:2])
    direct = det.detect(resize(x[:2], (16, 16)))
    assert torch.equal(res.scores, direct.scores)  # the same resize as training's reader
    assert res.maps.shape == (2, 40, 40)


def test_tile_mode_trains_on_native_crops_and_calibrates_at_full_size():
    x = _images(6, 40, 40)
    val = _images(3, 40, 40, seed=1)
    det = anomgan.train(x, validation=val, input_mode="tile", image_size=16, steps=2, target_fpr=0.0,
                        scoring={"image_score": "patch_topn", "patch": 8, "stride": 4}, **DD)
    assert det.input_mode == "tile" and det.image_size == 16
    assert det.info["validation_images"] == 3
    # the threshold was set on full-size validation images, scored as detect scores them
    full = det.detect(val)
    assert full.maps.shape == (3, 40, 40)
    assert det.threshold.value == pytest.approx(float(full.scores.max()), rel=1e-6)
    assert not bool(full.labels.any()) or det.threshold.rule


def test_tile_mode_refuses_images_smaller_than_the_tile():
    with pytest.raises(ValueError, match="smaller than the tile"):
        fit(_images(4, 12, 12), None, "ganomaly", input_mode="tile", image_size=16, steps=1,
            batch_size=2, progress=False, **TINY["ganomaly"])
    with pytest.raises(ValueError, match="image_size"):
        fit(_images(4, 12, 12), None, "ganomaly", input_mode="tile", steps=1, progress=False)


def test_input_mode_is_validated_and_survives_save_load(tmp_path):
    with pytest.raises(ValueError, match="input_mode"):
        anomgan.train(_images(4, 16, 16), input_mode="crop", steps=1, **DD)
    det = anomgan.train(_images(6, 16, 16), validation_fraction=0, steps=1, **DD)
    assert det.input_mode == "tile"  # already model size: larger images get tiled at detect
    det.input_mode = "resize"
    det.save(tmp_path / "d.anomgan")
    back = anomgan.load(tmp_path / "d.anomgan")
    assert back.input_mode == "resize" and "input mode" in back.describe()


def test_files_without_input_mode_read_as_tile(tmp_path):
    det = anomgan.train(_images(6, 16, 16), validation_fraction=0, steps=1, **DD)
    det.save(tmp_path / "d.anomgan")
    from anomgan.fileio import load_bundle, save_bundle
    tensors, meta, _ = load_bundle(tmp_path / "d.anomgan", kind="detector", max_format_version=1)
    del meta["input_mode"]
    save_bundle(tmp_path / "old.anomgan", tensors, meta, kind="detector", format_version=1)
    assert Detector.load(tmp_path / "old.anomgan").input_mode == "tile"


def test_paths_train_and_detect_read_the_same_way(tmp_path):
    paths = []
    for i in range(5):
        a = (np.random.default_rng(i).random((30, 30)) * 255).astype(np.uint8)
        p = tmp_path / f"{i}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    det = anomgan.train(paths, validation_fraction=0, image_size=16, steps=1, **DD)
    assert det.input_mode == "resize"
    from anomgan.data import as_images
    res = det.detect(paths)
    ref = det.detect(as_images(paths, image_size=16))
    torch.testing.assert_close(res.scores, ref.scores, rtol=0, atol=0)


@pytest.mark.parametrize("text, seconds", [("90s", 90.0), ("20m", 1200.0), ("1.5h", 5400.0), ("12", 12.0),
                                           (30, 30.0), (0.5, 0.5)])
def test_parse_duration(text, seconds):
    assert parse_duration("fit", "time_budget", text) == seconds


@pytest.mark.parametrize("bad, exc", [("soon", ValueError), ("-3m", ValueError), (0, ValueError),
                                      (True, TypeError), ([1], TypeError)])
def test_parse_duration_rejects(bad, exc):
    with pytest.raises(exc, match="time_budget"):
        parse_duration("fit", "time_budget", bad)


def test_time_budget_stops_training_and_the_steps_run_are_recorded():
    x = _images(8, 16, 16)
    det = anomgan.train(x, validation_fraction=0, time_budget=0.5, **DD)
    steps = det.info["steps_by_stage"]["main"]
    assert 1 <= steps < 10_000
    assert det.info["time_budget"] == 0.5 and det.info["training_seconds"] >= 0.5


def test_time_budget_with_steps_is_a_maximum_and_stages_share_the_time():
    x = _images(8, 16, 16)
    r = fit(x, None, "noisy-gan", steps=6, time_budget=3600, batch_size=4, progress=False,
            **TINY["noisy-gan"])
    stages = [h["stage"] for h in r.history]
    assert stages.count("gan") == 3 and stages.count("encoder") == 3  # the budget was never reached
    r = fit(x, None, "noisy-gan", time_budget=1.0, batch_size=4, progress=False, **TINY["noisy-gan"])
    stages = [h["stage"] for h in r.history]
    assert stages.count("gan") >= 1 and stages.count("encoder") >= 1  # each stage got its share


def test_time_budget_counts_over_a_resume(tmp_path):
    x = _images(8, 16, 16)
    kw = dict(batch_size=4, progress=False, checkpoint_dir=tmp_path, **TINY["ganomaly"])
    first = fit(x, None, "ganomaly", time_budget=0.4, **kw)
    n_first = len(first.history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = fit(x, None, "ganomaly", time_budget=0.4, resume=first.last_checkpoint, **kw)
    assert len(again.history) == 0  # the budget was already used before the resume
    more = fit(x, None, "ganomaly", time_budget=10.0, steps=n_first + 3, resume=first.last_checkpoint, **kw)
    assert len(more.history) == 3


def test_cli_train_with_time_budget_tile_mode_and_full_size_validation(tmp_path):
    from anomgan.apps.cli import main
    from image_files import write_pngs

    normal, val = tmp_path / "normal", tmp_path / "val"
    write_pngs(str(normal), 6, size=24, seed=0)
    write_pngs(str(val), 3, size=24, seed=1)
    out = str(tmp_path / "m.anomgan")
    rc = main(["train", "--normal", str(normal), "--validation", str(val), "--out", out, "--size", "16",
               "--input-mode", "tile", "--time-budget", "1s", "--batch-size", "4", "--quiet",
               "--method", "ganomaly", "--hparam", "z_dim=8", "--hparam", "width=8", "--hparam", "max_width=16"])
    assert rc == 0
    det = anomgan.load(out)
    assert det.input_mode == "tile" and det.info["time_budget"] == "1s"
    assert det.info["validation_images"] == 3 and det.info["steps_by_stage"]["main"] >= 1
    assert main(["train", "--normal", str(normal), "--out", out, "--time-budget", "soon", "--quiet"]) == 2


def test_detect_warns_when_a_tiled_threshold_was_calibrated_on_another_size():
    det = anomgan.train(_images(6, 16, 16), validation=_images(3, 16, 16, seed=1), steps=1, **DD)
    assert det.info["calibration_image_size"] == [16, 16]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det.detect(_images(2, 16, 16, seed=2))  # same size: silent
    with pytest.warns(UserWarning, match="calibrated on 16x16 images, these are 40x40"):
        det.detect(_images(2, 40, 40, seed=2))
    det.calibrate(_images(3, 40, 40, seed=3), fpr=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det.detect(_images(2, 40, 40, seed=2))
