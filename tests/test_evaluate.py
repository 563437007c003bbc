"""anomgan.evaluate / `anomgan evaluate`: the new curve metrics against scikit-learn, evaluate's
numbers against the metrics of anomgan.detect's own scores and maps, masks given every way, MVTec
folders, the JSON and PNG outputs, and clear errors."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import (average_precision_score, precision_recall_curve, precision_score,
                             recall_score, f1_score, roc_curve as sk_roc_curve)

import anomgan
from anomgan.apps.cli import EXIT_USER_ERROR, main
from anomgan.apps.curves import PLOT_SIZE
from anomgan.data.mvtec import read_mvtec
from anomgan.evaluation import summary
from anomgan.models import get_method
from anomgan.scoring.metrics import (aupro, average_precision, f1_max, pixel_auroc, pr_curve,
                                     precision_recall_f1, roc_auc, roc_auc_ci, roc_auc_difference,
                                     roc_curve)
from anomgan.scoring.thresholds import fixed
from models_helpers import TINY, one_thread  # noqa: F401  (autouse: one torch thread)
from test_mvtec import make_tree


# ------------------------------------------------------------------------------ metrics
def _random_case(seed):
    r = np.random.default_rng(seed)
    n = int(r.integers(2, 90))
    y = r.integers(0, 2, n)
    y[:2] = [0, 1]
    return y, r.standard_normal(n), r.integers(0, 4, n).astype(np.float32)  # continuous, many ties


@pytest.mark.parametrize("seed", range(8))
def test_curves_and_average_precision_match_sklearn(seed):
    y, s_cont, s_ties = _random_case(seed)
    for s in (s_cont, s_ties):
        fpr, tpr, thr = roc_curve(y, s)
        f, t, th = sk_roc_curve(y, s, drop_intermediate=False)
        np.testing.assert_allclose(fpr, f, atol=1e-12)
        np.testing.assert_allclose(tpr, t, atol=1e-12)
        np.testing.assert_array_equal(thr, th)
        assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s), abs=1e-12)
        rec, prec, thr = pr_curve(y, s)
        p, r, th = precision_recall_curve(y, s)
        np.testing.assert_allclose(rec, r[::-1], atol=1e-12)
        np.testing.assert_allclose(prec, p[::-1], atol=1e-12)
        assert thr[0] == np.inf
        np.testing.assert_array_equal(thr[1:], th[::-1])
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
        pred = s >= np.median(s)
        got = precision_recall_f1(y, pred)
        want = (precision_score(y, pred, zero_division=0), recall_score(y, pred), f1_score(y, pred))
        assert got == pytest.approx(want, abs=1e-12)
        assert all(isinstance(v, float) for v in (*got, average_precision(y, s)))


def test_metric_hand_cases_and_errors():
    assert average_precision([0, 1, 1], [0.1, 0.9, 0.8]) == 1.0
    assert average_precision(torch.tensor([1, 0]), torch.tensor([0.1, 0.9])) == 0.5
    assert precision_recall_f1([0, 1, 1, 0], [False, False, False, False]) == (0.0, 0.0, 0.0)
    assert precision_recall_f1([0, 1, 1, 0], [1, 1, 0, 0]) == (0.5, 0.5, 0.5)
    for fn in (roc_curve, pr_curve, average_precision):
        with pytest.raises(ValueError, match="only one class"):
            fn([1, 1], [0.1, 0.2])
        with pytest.raises(ValueError, match="NaN"):
            fn([0, 1], [0.1, float("nan")])
        with pytest.raises(ValueError, match="same length"):
            fn([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="predicted must contain only 0/1"):
        precision_recall_f1([0, 1], [0, 2])
    with pytest.raises(ValueError, match="same length"):
        precision_recall_f1([0, 1], [0])
    with pytest.raises(ValueError, match="only one class"):
        precision_recall_f1([0, 0], [0, 1])


# ------------------------------------------------------------------------------ evaluate
def tiny_detector(threshold=None, size=16, seed=0):
    torch.manual_seed(seed)
    det = anomgan.Detector(get_method("dual-disc")(size, 1, **TINY["dual-disc"]))
    if threshold is not None:
        det.threshold = fixed(threshold)
    return det


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("mvtec") / "part")


def _direct(det, ds):
    """The metrics computed straight from anomgan.detect's scores and maps."""
    normal = [e.path for e in ds.test_normal]
    anom = ds.test_anomalous
    r = anomgan.detect(normal + [e.path for e in anom], det)
    y = np.array([0] * len(normal) + [1] * len(anom))
    s = r.scores.numpy()
    masks = [np.zeros((32, 32), bool)] * len(normal) + [np.asarray(Image.open(e.mask)) > 0 for e in anom]
    maps = list(r.maps.numpy())
    return y, s, r, maps, masks


def test_evaluate_equals_metrics_of_detect(tree, tmp_path):
    ds = read_mvtec(tree)
    s0 = anomgan.detect([e.path for e in ds.test], tiny_detector()).scores
    det = tiny_detector(threshold=float(s0.median()))  # some flagged, some not
    y, s, r, maps, masks = _direct(det, ds)
    m = anomgan.evaluate(det, mvtec=tree, batch_size=3)
    assert (m["normal_images"], m["anomalous_images"], m["masked_images"]) == (4, 5, 5)
    assert m["image_auroc"] == pytest.approx(roc_auc(y, s), abs=1e-12)
    assert m["image_auroc_ci95"] == pytest.approx(list(roc_auc_ci(y, s, 0.95)[1:]), abs=1e-12)
    assert m["image_aupr"] == pytest.approx(average_precision(y, s), abs=1e-12)
    p, rc, f1 = precision_recall_f1(y, r.labels.numpy())
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((p, rc, f1))
    c = m["confusion"]
    assert c["tp"] + c["fn"] == 5 and c["fp"] + c["tn"] == 4 and c["tp"] + c["fp"] == int(r.labels.sum())
    assert (m["best_f1"], m["best_f1_threshold"]) == pytest.approx(f1_max(y, s))
    assert m["threshold"] == pytest.approx(det.threshold.value)
    assert m["pixel_auroc"] == pytest.approx(pixel_auroc(maps, masks), abs=1e-12)
    assert m["aupro"] == pytest.approx(aupro(maps, masks), abs=1e-12)
    assert set(m["per_defect"]) == {"scratch", "spot"}
    for d, n in (("scratch", 3), ("spot", 2)):
        keep = np.r_[np.ones(4, bool), [e.defect == d for e in ds.test_anomalous]]
        assert m["per_defect"][d] == {"images": n, "image_auroc": pytest.approx(roc_auc(y[keep], s[keep]))}
    json.dumps(m)  # JSON-able as it is
    # the same data given as folders, then as lists and arrays, give the same numbers
    f = anomgan.evaluate(det, os.path.join(tree, "test", "good"), [e.path for e in ds.test_anomalous],
                         masks=[e.mask for e in ds.test_anomalous])
    arrays = anomgan.evaluate(det, np.stack([np.asarray(Image.open(e.path)) for e in ds.test_normal])[:, None],
                              [np.asarray(Image.open(e.path)) for e in ds.test_anomalous],
                              masks=np.stack(masks[4:]), batch_size=2)
    for k in ("image_auroc", "image_aupr", "f1", "best_f1", "pixel_auroc", "aupro"):
        assert f[k] == pytest.approx(m[k], abs=1e-6) and arrays[k] == pytest.approx(m[k], abs=1e-6), k
    assert "per_defect" not in f
    assert (arrays["normal_images"], arrays["anomalous_images"], arrays["masked_images"]) == (4, 5, 5)


def test_mask_folder_matching_by_stem(tree, tmp_path):
    ds = read_mvtec(tree)
    det = tiny_detector()
    anom = tmp_path / "anom"
    gt = tmp_path / "gt"
    os.makedirs(anom)
    os.makedirs(gt)
    for i, e in enumerate(ds.test_anomalous):  # flat folders, masks <stem>_mask.png and <stem>.png
        name = f"{e.defect}_{os.path.basename(e.path)}"
        Image.open(e.path).save(anom / name)
        Image.open(e.mask).save(gt / (name[:-4] + ("_mask.png" if i % 2 else ".png")))
    m = anomgan.evaluate(det, os.path.join(tree, "test", "good"), str(anom), masks=str(gt))
    want = anomgan.evaluate(det, mvtec=tree)
    assert m["pixel_auroc"] == pytest.approx(want["pixel_auroc"], abs=1e-6)
    assert m["masked_images"] == 5
    os.remove(gt / "spot_001.png")  # an image without a mask: left out of the pixel metrics, warned
    with pytest.warns(UserWarning, match="1 of 5 anomalous images have no mask"):
        m = anomgan.evaluate(det, os.path.join(tree, "test", "good"), str(anom), masks=str(gt))
    assert m["masked_images"] == 4 and any("without a mask" in n for n in m["notes"])
    assert m["pixel_auroc"] is not None


def test_no_threshold_no_masks_notes_and_float16_maps(tree, monkeypatch):
    det = tiny_detector()
    m = anomgan.evaluate(det, os.path.join(tree, "test", "good"), os.path.join(tree, "test", "spot"))
    assert m["threshold"] is None and m["precision"] is None and m["f1"] is None and m["confusion"] is None
    assert m["pixel_auroc"] is None and m["aupro"] is None and m["masked_images"] == 0
    assert any("no threshold" in n for n in m["notes"]) and any("no masks" in n for n in m["notes"])
    exact = anomgan.evaluate(det, mvtec=tree)
    monkeypatch.setattr("anomgan.evaluation.MAX_FLOAT32_PIXELS", 3000)
    half = anomgan.evaluate(det, mvtec=tree)
    assert half["pixel_auroc"] == pytest.approx(exact["pixel_auroc"], abs=0.01)
    assert any("float16" in n for n in half["notes"])


def _other_masks(tmp_path):
    """A folder of masks named like none of the test images."""
    folder = tmp_path / "other_masks"
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "other_mask.png")
    return str(folder)


def test_errors(tree, tmp_path):
    det = tiny_detector()
    good = os.path.join(tree, "test", "good")
    only_good = tmp_path / "only_good"
    os.makedirs(only_good / "test")
    os.symlink(good, only_good / "test" / "good")
    with pytest.raises(ValueError, match="no anomalous images"):
        anomgan.evaluate(det, mvtec=str(only_good))
    with pytest.raises(ValueError, match="no test sub-folder"):
        anomgan.evaluate(det, mvtec=str(tmp_path))
    with pytest.raises(ValueError, match="give normal= and anomalous="):
        anomgan.evaluate(det, good)
    with pytest.raises(ValueError, match="not both"):
        anomgan.evaluate(det, good, good, mvtec=tree)
    empty = tmp_path / "empty"
    os.makedirs(empty)
    with pytest.raises(ValueError, match="no image files"):
        anomgan.evaluate(det, good, str(empty))
    ds = read_mvtec(tree)
    anom = [e.path for e in ds.test_anomalous]
    with pytest.raises(ValueError, match="mask masks\\[1\\] is 16x8 \\(W x H\\) but its image .* is 32x32"):
        anomgan.evaluate(det, good, anom, masks=[None, np.zeros((8, 16), bool), None, None, None])
    with pytest.raises(ValueError, match="2 masks for 5 anomalous images"):
        anomgan.evaluate(det, good, anom, masks=[None, None])
    with pytest.raises(ValueError, match="no mask is named like an anomalous image"):
        anomgan.evaluate(det, good, anom, masks=_other_masks(tmp_path))
    with pytest.raises(ValueError, match="give a .png file name"):
        anomgan.evaluate(det, mvtec=tree, plot=str(tmp_path / "x.jpg"))
    nan_det = tiny_detector()
    with torch.no_grad():
        for p in nan_det.method.parameters():
            p.fill_(float("nan"))
    with pytest.raises(ValueError, match="score of .* is not finite"):
        anomgan.evaluate(nan_det, good, anom)


def test_out_and_plot_files(tree, tmp_path):
    det = tiny_detector(threshold=0.1)
    out, plot = tmp_path / "o" / "metrics.json", tmp_path / "roc.png"
    m = anomgan.evaluate(det, mvtec=tree, out=out, plot=plot)
    assert json.loads(out.read_text()) == json.loads(json.dumps(m))
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size == PLOT_SIZE and im.mode == "RGB"
        a = np.asarray(im)
    assert (a < 250).any(axis=2).mean() > 0.02  # something is drawn
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]  # atomic writes left nothing
    anomgan.evaluate(tiny_detector(), mvtec=tree, plot=plot)  # no threshold: still a plot


def _red_rows(png):
    """Per row of the hardest-cases picture: whether its captions hold red (wrong-side) text."""
    from anomgan.apps.hardest import _CAPTION, _HEADING, CELL

    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    red = (a[..., 0] > 170) & (a[..., 1] < 90) & (a[..., 2] < 90)
    row = _HEADING + CELL + _CAPTION
    return [bool(red[r * row + _HEADING + CELL:(r + 1) * row].any()) for r in range(2)]


def test_hardest_png_shows_the_lowest_scored_defects_and_highest_scored_normals(tree, tmp_path):
    from anomgan.apps.hardest import _CAPTION, _HEADING, _PAD, CELL

    ds = read_mvtec(tree)
    normal, anom = [e.path for e in ds.test_normal], [e.path for e in ds.test_anomalous]
    s = anomgan.detect(normal + anom, tiny_detector()).scores.numpy()
    sn, sa = s[:4], s[4:]
    png = tmp_path / "hard.png"
    m = anomgan.evaluate(tiny_detector(threshold=float(s.max()) + 1), mvtec=tree, hardest=png)
    missed, alarms = m["hardest"]["missed"], m["hardest"]["false_alarms"]
    assert [c["name"] for c in missed] == [anom[i] for i in np.argsort(sa, kind="stable")]  # all 5: k = 8
    assert [c["name"] for c in alarms] == [normal[i] for i in np.argsort(-sn, kind="stable")]
    assert [c["score"] for c in missed] == pytest.approx(np.sort(sa).tolist(), abs=1e-6)
    assert [c["score"] for c in alarms] == pytest.approx(np.sort(sn)[::-1].tolist(), abs=1e-6)
    json.dumps(m)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (_PAD + 5 * (CELL + _PAD), 2 * (_HEADING + CELL + _CAPTION) + _PAD)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    # red captions mark the side the threshold gets wrong: above every score, every defect is
    # missed and no normal is flagged; below every score, the reverse; without one, no red
    assert _red_rows(png) == [True, False]
    anomgan.evaluate(tiny_detector(threshold=float(s.min()) - 1), mvtec=tree, hardest=png)
    assert _red_rows(png) == [False, True]
    assert "hardest" not in anomgan.evaluate(tiny_detector(), mvtec=tree)
    anomgan.evaluate(tiny_detector(), mvtec=tree, hardest=png)
    assert _red_rows(png) == [False, False]
    with pytest.raises(ValueError, match="hardest"):
        anomgan.evaluate(tiny_detector(), mvtec=tree, hardest=str(tmp_path / "h.jpg"))


def test_compare_is_the_paired_test_of_the_two_detectors_scores(tree, tmp_path):
    ds = read_mvtec(tree)
    det, other = tiny_detector(), tiny_detector(seed=3)
    paths = [e.path for e in ds.test]
    y = np.r_[np.zeros(len(ds.test_normal), int), np.ones(len(ds.test_anomalous), int)]
    assert [e.path for e in ds.test_normal] + [e.path for e in ds.test_anomalous] == paths
    sa, sb = anomgan.detect(paths, det).scores.numpy(), anomgan.detect(paths, other).scores.numpy()
    assert not np.allclose(sa, sb)
    path = str(tmp_path / "other.anomgan")
    other.save(path)
    m = anomgan.evaluate(det, mvtec=tree, compare=path, batch_size=4)
    want = roc_auc_difference(y, sa, sb)
    c = m["comparison"]
    assert (c["model"], c["method"]) == (path, "dual-disc")
    assert c["image_auroc"] == pytest.approx(want["auroc_b"], abs=1e-12)
    assert c["difference"] == pytest.approx(want["difference"], abs=1e-12)
    assert c["ci95"] == pytest.approx([want["lower"], want["upper"]], abs=1e-12)
    assert c["p_value"] == pytest.approx(want["p_value"], abs=1e-12)
    assert m["image_auroc"] - c["image_auroc"] == pytest.approx(c["difference"], abs=1e-12)
    assert "against " + path in summary(m) and "DeLong" in summary(m)
    json.dumps(m)
    same = anomgan.evaluate(det, mvtec=tree, compare=det)["comparison"]
    assert (same["difference"], same["p_value"], same["model"]) == (0.0, 1.0, None)
    assert "comparison" not in anomgan.evaluate(det, mvtec=tree)
    one = anomgan.evaluate(det, [e.path for e in ds.test_normal], [ds.test_anomalous[0].path], compare=other)
    assert one["comparison"] is None and any("paired test" in n for n in one["notes"])
    with pytest.raises(TypeError, match="compare"):
        anomgan.evaluate(det, mvtec=tree, compare=3)


# ------------------------------------------------------------------------------ CLI
def test_cli_evaluate_compare_prints_the_paired_test_and_names_a_missing_file(tree, tmp_path, capsys):
    model, other = str(tmp_path / "m.anomgan"), str(tmp_path / "o.anomgan")
    tiny_detector().save(model)
    tiny_detector(seed=3).save(other)
    out = str(tmp_path / "m.json")
    assert main(["evaluate", "--model", model, "--mvtec", tree, "--compare", other, "--out", out, "--quiet"]) == 0
    text = capsys.readouterr().out
    c = json.load(open(out))["comparison"]
    assert f"against {other} (image AUROC {c['image_auroc']:.3f}): difference {c['difference']:+.3f}" in text
    assert main(["evaluate", "--model", model, "--mvtec", tree, "--compare", str(tmp_path / "no.anomgan"),
                 "--quiet"]) == EXIT_USER_ERROR
    assert "--compare" in capsys.readouterr().err


def test_cli_evaluate_end_to_end(tree, tmp_path, capsys):
    model = str(tmp_path / "m.anomgan")
    tiny_detector(threshold=0.05).save(model)
    out, plot = str(tmp_path / "metrics.json"), str(tmp_path / "curves.png")
    hard = str(tmp_path / "hardest.png")
    assert main(["evaluate", "--model", model, "--mvtec", tree, "--out", out, "--plot", plot,
                 "--hardest", hard, "--batch-size", "4", "--quiet"]) == 0
    text = capsys.readouterr().out
    for needle in ("4 normal and 5 anomalous images (5 with masks)", "image AUROC", "(95 % CI 0.", "AUPR",
                   "at threshold 0.05: precision", "best F1", "pixel AUROC", "AUPRO",
                   "per defect type: scratch", f"wrote {out}", f"wrote {plot}", f"wrote {hard}"):
        assert needle in text, (needle, text)
    m = json.load(open(out))
    assert [c["name"] for c in m.pop("hardest")["missed"]] and os.path.isfile(hard)
    assert m == json.loads(json.dumps(anomgan.evaluate(model, mvtec=tree)))
    with Image.open(plot) as im:
        assert im.size == PLOT_SIZE
    # folders
    assert main(["evaluate", "--model", model, "--normal", os.path.join(tree, "test", "good"),
                 "--anomalous", os.path.join(tree, "test", "scratch"), "--masks",
                 os.path.join(tree, "ground_truth", "scratch"), "--quiet"]) == 0
    assert "4 normal and 3 anomalous images (3 with masks)" in capsys.readouterr().out


@pytest.mark.parametrize("extra, needle", [
    (["--mvtec", "{tree}", "--normal", "{tree}"], "not both"),
    (["--normal", "{tree}/test/good"], "give --normal DIR and --anomalous DIR"),
    (["--mvtec", "{tmp}/nope"], "no such folder"),
    (["--mvtec", "{tree}", "--out", "{tmp}/m.csv"], "give a .json file name"),
    (["--mvtec", "{tree}", "--plot", "{tmp}/m.svg"], "give a .png file name"),
    (["--mvtec", "{tree}", "--hardest", "{tmp}/h.jpg"], "--hardest"),
    (["--mvtec", "{tree}/test"], "no test sub-folder"),
    (["--normal", "{tree}/test/good", "--anomalous", "{tree}/test/spot", "--masks", "{tmp}/other_masks"],
     "no mask is named like"),
])
def test_cli_evaluate_errors(tree, tmp_path, capsys, extra, needle):
    model = str(tmp_path / "m.anomgan")
    tiny_detector().save(model)
    _other_masks(tmp_path)
    args = [a.format(tree=tree, tmp=tmp_path) for a in extra]
    assert main(["evaluate", "--model", model, *args, "--quiet"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("anomgan: error: ") and len(err.strip().splitlines()) == 1 and needle in err, err


def test_cli_evaluate_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for o in ("--model", "--normal", "--anomalous", "--masks", "--mvtec", "--out", "--plot", "--hardest",
              "--batch-size"):
        assert o in out, o
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--mvtec" in capsys.readouterr().out


def test_cli_evaluate_missing_model(tree, tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "x.anomgan"), "--mvtec", tree]) == EXIT_USER_ERROR
    assert "no such file" in capsys.readouterr().err
