"""MVTec-AD-style folders (anomgan.data.mvtec): listing, masks, errors, and training from one
(anomgan.train(root) and `anomgan train --mvtec`)."""
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import anomgan
from anomgan.apps.cli import EXIT_USER_ERROR, main
from anomgan.data.mvtec import is_mvtec_root, read_mask, read_mvtec, train_good_if_mvtec
from models_helpers import one_thread  # noqa: F401  (autouse: one torch thread)

SIZE = 32
DUAL = ["--method", "dual-disc", "--hparam", "width=4", "--hparam", "d_width=4", "--hparam", "max_width=16"]


def _png(path, a):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(a).save(path)
    return str(path)


def _noise(rng, size=SIZE):
    return (rng.random((size, size)) * 60 + 100).astype(np.uint8)


def make_tree(root, *, n_train=6, n_good=4, defects=(("scratch", 3), ("spot", 2)), mask_style="_mask",
              seed=0, size=SIZE, masks=True):
    """root/train/good, root/test/good, root/test/<defect>, root/ground_truth/<defect>/<stem>_mask.png:
    noise images; each defect image has a bright planted defect, its mask marks exactly it."""
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        _png(os.path.join(root, "train", "good", f"{i:03d}.png"), _noise(rng, size))
    for i in range(n_good):
        _png(os.path.join(root, "test", "good", f"{i:03d}.png"), _noise(rng, size))
    for d, n in defects:
        for i in range(n):
            a = _noise(rng, size)
            m = np.zeros((size, size), np.uint8)
            y, x = rng.integers(2, size - 10, 2)
            if d == "scratch":
                m[y:y + 8, x:x + 2] = 255
            else:
                m[y:y + 5, x:x + 5] = 255
            a[m > 0] = 250
            _png(os.path.join(root, "test", d, f"{i:03d}.png"), a)
            if masks:
                _png(os.path.join(root, "ground_truth", d, f"{i:03d}{mask_style}.png"), m)
    return str(root)


def test_read_tree(tmp_path):
    root = make_tree(tmp_path / "bottle")
    ds = read_mvtec(root)
    assert ds.root == root
    assert [os.path.basename(p) for p in ds.train_good] == [f"{i:03d}.png" for i in range(6)]
    assert len(ds.test_normal) == 4 and all(e.mask is None and e.defect == "good" for e in ds.test_normal)
    assert ds.defects == ["scratch", "spot"]
    anom = ds.test_anomalous
    assert [e.defect for e in anom] == ["scratch"] * 3 + ["spot"] * 2
    assert all(e.label == 1 for e in anom) and all(e.label == 0 for e in ds.test_normal)
    for e in anom:
        assert e.mask == os.path.join(root, "ground_truth", e.defect,
                                      os.path.basename(e.path)[:-4] + "_mask.png")
    assert ds.has_masks


def test_masks_named_like_the_image_and_btad_ok(tmp_path):
    root = make_tree(tmp_path / "visa", mask_style="")  # <stem>.png masks (VisA, BTAD exports)
    ds = read_mvtec(root)
    assert all(e.mask is not None and e.mask.endswith(os.path.basename(e.path)) for e in ds.test_anomalous)
    # BTAD names the normal folders "ok"
    btad = tmp_path / "btad"
    os.rename(os.path.join(root, "train", "good"), tmp_path / "x")
    os.makedirs(btad / "train")
    os.rename(tmp_path / "x", btad / "train" / "ok")
    os.rename(os.path.join(root, "test"), btad / "test")
    os.rename(btad / "test" / "good", btad / "test" / "ok")
    ds = read_mvtec(btad)
    assert len(ds.train_good) == 6 and len(ds.test_normal) == 4 and ds.defects == ["scratch", "spot"]


def test_no_ground_truth_means_no_masks_and_a_missing_mask_warns(tmp_path):
    root = make_tree(tmp_path / "a", masks=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = read_mvtec(root)
    assert not ds.has_masks and len(ds.test_anomalous) == 5
    root = make_tree(tmp_path / "b")
    os.remove(os.path.join(root, "ground_truth", "spot", "001_mask.png"))
    with pytest.warns(UserWarning, match=r"1 defective test images have no mask.*spot.001\.png"):
        ds = read_mvtec(root)
    assert [e.mask is None for e in ds.test_anomalous] == [False] * 4 + [True]


def test_errors_name_the_root_and_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        read_mvtec(tmp_path / "nope")
    root = make_tree(tmp_path / "t")
    os.rename(os.path.join(root, "train"), tmp_path / "train_elsewhere")
    with pytest.raises(ValueError, match=rf"{root}: not an MVTec-AD-style folder: no train/good"):
        read_mvtec(root)
    assert len(read_mvtec(root, train=False).test) == 9  # evaluation needs only test/
    root = make_tree(tmp_path / "u")
    os.rename(os.path.join(root, "test"), tmp_path / "test_elsewhere")
    with pytest.raises(ValueError, match=rf"{root}: not an MVTec-AD-style folder: no test sub-folder"):
        read_mvtec(root)
    assert len(read_mvtec(root, test=False).train_good) == 6
    os.makedirs(tmp_path / "e" / "train" / "good")
    with pytest.raises(ValueError, match="train/good holds no image files"):
        read_mvtec(tmp_path / "e", test=False)


def test_read_mask_bool_resized_nearest_and_size_errors(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[2:4, 4:8] = 1  # any value > 0 is a defect
    p = _png(tmp_path / "m.png", m)
    got = read_mask(p, (8, 8))
    assert got.dtype == bool and got.sum() == 8
    big = read_mask(p, (16, 16))  # same aspect ratio: nearest resize
    assert big.shape == (16, 16) and big.sum() == 32 and big[4:8, 8:16].all()
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[0, 0, 2] = 200
    assert read_mask(_png(tmp_path / "rgb.png", rgb), (8, 8)).sum() == 1
    with pytest.raises(ValueError, match=r"is 8x8 \(W x H\) but img.png is 16x8"):
        read_mask(p, (8, 16), name=f"mask {p}", image="img.png")
    assert read_mask(torch.ones(4, 4), (4, 4)).all()
    with pytest.raises(ValueError, match="2-D"):
        read_mask(np.zeros((1, 4, 4)), (4, 4))


def test_is_mvtec_root(tmp_path):
    root = make_tree(tmp_path / "r")
    assert is_mvtec_root(root) and train_good_if_mvtec(root) == os.path.join(root, "train", "good")
    plain = os.path.join(root, "train", "good")
    assert not is_mvtec_root(plain) and train_good_if_mvtec(plain) == plain
    x = torch.zeros(1)
    assert train_good_if_mvtec(x) is x


def test_api_train_accepts_an_mvtec_root(tmp_path):
    root = make_tree(tmp_path / "r", size=16)
    det = anomgan.train(root, method="ganomaly", image_size=16, steps=2, batch_size=4, progress=False,
                        hparams={"z_dim": 8, "width": 8, "max_width": 16}, validation_fraction=0.34)
    assert det.info["normal_images"] + det.info["validation_images"] == 6


def test_cli_train_mvtec(tmp_path, capsys):
    root = make_tree(tmp_path / "r", size=16)
    out = str(tmp_path / "m.anomgan")
    assert main(["train", "--mvtec", root, "--out", out, "--steps", "2", "--size", "16", "--batch-size", "4",
                 "--quiet", "--val-fraction", "0.34", *DUAL, "--anomalous", os.path.join(root, "test", "spot")]) == 0
    det = anomgan.load(out)
    assert det.info["normal_images"] + det.info["validation_images"] == 6
    capsys.readouterr()
    # errors: one line, exit 2
    os.rename(os.path.join(root, "train"), tmp_path / "gone")
    assert main(["train", "--mvtec", root, "--out", out, "--steps", "1", "--quiet"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("anomgan: error: ") and "no train/good" in err and root in err
    assert main(["train", "--mvtec", root, "--normal", root, "--out", out]) == EXIT_USER_ERROR
    assert "not both" in capsys.readouterr().err
    assert main(["train", "--out", out]) == EXIT_USER_ERROR
    assert "--normal DIR" in capsys.readouterr().err
