"""Issue #16 (items 1 and 5): non-finite weights and scores never pass as ok, and arguments or
file settings that would be ignored or unbounded are refused with a clear error."""
import math

import pytest
import torch

import anomgan
from anomgan.detector import Detector, ScoringConfig
from anomgan.fileio import BundleError, load_bundle, save_bundle
from anomgan.models import get_method
from anomgan.models.base import MAX_SIZE_HPARAM
from anomgan.ops import BackendUnavailableError
from anomgan.scoring.result import DetectionResult
from anomgan.scoring.thresholds import fixed

from models_helpers import NAMES, TINY, one_thread  # noqa: F401  (fixture)

FAST = ScoringConfig(search_steps=2, batch_size=8)


def tiny_detector(name="ganomaly", seed=0):
    torch.manual_seed(seed)
    return Detector(get_method(name)(16, 1, **TINY[name]), scoring=FAST)


def images(n=4, seed=1):
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def rewrite(src, dst, *, tensors=None, meta=None):
    """Copy the detector file ``src`` to ``dst`` with tensors / metadata edited."""
    t, m, _ = load_bundle(src, kind="detector", max_format_version=1)
    t = tensors(t) if tensors else t
    m = meta(m) if meta else m
    save_bundle(dst, t, m, kind="detector", format_version=1)


def with_bad_scores(det, bad, monkeypatch):
    """Make ``det`` score the images at the indices of ``bad`` (index -> value) that value."""
    real = det.score_model_size

    def fake(x, backend=None):
        scores, maps = real(x, backend)
        for i, v in bad.items():
            scores[i] = v
        return scores, maps

    monkeypatch.setattr(det, "score_model_size", fake)


# ---- 1. non-finite weights and scores ----------------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_load_refuses_non_finite_weights_naming_file_and_tensor(tmp_path, value):
    det = tiny_detector()
    det.save(tmp_path / "ok.anomgan")
    names = []

    def poison(t):
        key = sorted(k for k, v in t.items() if v.is_floating_point())[3]
        names.append(key)
        t[key] = t[key].clone()
        t[key].view(-1)[0] = value
        return t

    rewrite(tmp_path / "ok.anomgan", tmp_path / "bad.anomgan", tensors=poison)
    with pytest.raises(BundleError, match="bad.anomgan") as err:
        anomgan.load(tmp_path / "bad.anomgan")
    assert repr(names[0]) in str(err.value) and "finite" in str(err.value)
    with pytest.raises(BundleError, match=names[0].replace(".", r"\.")):
        Detector.load(tmp_path / "bad.anomgan")


@pytest.mark.parametrize("threshold", [None, 1e30])
def test_a_nan_score_is_labelled_anomalous_with_a_note(monkeypatch, threshold):
    det = tiny_detector()
    det.threshold = None if threshold is None else fixed(threshold)
    x = images(4)
    clean = det.detect(x)
    with_bad_scores(det, {1: math.nan, 3: -math.inf}, monkeypatch)
    res = det.detect(x)
    assert res.labels.tolist() == [False, True, False, True]
    assert res.notes == ["", "non-finite score", "", "non-finite score"]
    assert res.invalid.tolist() == [False, True, False, True]
    recs = res.to_records()
    assert [r["note"] for r in recs] == res.notes
    assert [r["anomalous"] for r in recs] == [False, True, False, True]
    # the finite images are untouched
    torch.testing.assert_close(res.scores[[0, 2]], clean.scores[[0, 2]], rtol=0, atol=0)
    assert clean.notes == [""] * 4 and not clean.labels.any()


def test_records_carry_an_empty_note_normally():
    res = DetectionResult(scores=torch.tensor([0.1, 0.9]), maps=torch.zeros(2, 4, 4),
                          labels=torch.tensor([False, True]), threshold=0.5, names=["a", "b"])
    assert res.to_records() == [{"name": "a", "score": pytest.approx(0.1), "anomalous": False,
                                 "note": ""},
                                {"name": "b", "score": pytest.approx(0.9), "anomalous": True,
                                 "note": ""}]
    nan = DetectionResult(scores=torch.tensor([math.nan]), maps=torch.zeros(1, 4, 4),
                          labels=torch.tensor([True]), threshold=None)
    assert nan.notes == ["non-finite score"] and nan.to_records()[0]["note"] == "non-finite score"


@pytest.mark.parametrize("how", ["fpr", "quantile", "f1"])
def test_calibration_refuses_non_finite_validation_scores(monkeypatch, how):
    det = tiny_detector()
    det.threshold = old = fixed(0.25)
    with_bad_scores(det, {2: math.nan}, monkeypatch)
    x = images(4)
    kwargs = {"fpr": dict(fpr=0.1), "quantile": dict(quantile=0.9)}.get(how)
    with pytest.raises(ValueError, match=r"calibrate: 1 of 4 validation scores are not finite "
                                         r"\(first: image 2"):
        if kwargs:
            det.calibrate(x, **kwargs)
        else:
            det.calibrate(images=x, labels=[0, 1, 0, 1])
    assert det.threshold is old


# ---- 5. arguments that were ignored or unbounded ----------------------------------------------
def test_batch_size_zero_is_refused(tmp_path):
    det = tiny_detector()
    with pytest.raises(ValueError, match="detect: batch_size must be an int >= 1, got 0"):
        det.detect(images(2), batch_size=0)
    det.save(tmp_path / "d.anomgan")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        anomgan.detect(images(2), tmp_path / "d.anomgan", batch_size=0)


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_backend_is_refused_for_every_method(name):
    det = tiny_detector(name)
    with pytest.raises(ValueError, match=r"backend must be one of 'torch', 'cpp', 'triton', "
                                         r"'cuda', got 'bogus'"):
        det.detect(images(2), backend="bogus")
    with pytest.raises(TypeError, match="backend must be a str or None"):
        det.detect(images(2), backend=3)
    torch.testing.assert_close(det.detect(images(2), backend="torch").scores,
                               det.detect(images(2), backend="TORCH").scores, rtol=0, atol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_backend_that_cannot_run_here_is_refused_even_when_unused():
    det = tiny_detector("ganomaly")   # ganomaly runs no fused op
    with pytest.raises(BackendUnavailableError, match="cuda"):
        det.detect(images(2), backend="cuda")


def test_scoring_settings_are_bounded():
    limits = {"search_steps": 100_000, "search_restarts": 1_000, "batch_size": 65_536,
              "patch": 4096, "stride": 4096, "n": 10_000, "tile_overlap": 4096}
    for key, top in limits.items():
        ScoringConfig(**{key: top})
        with pytest.raises(ValueError, match=f"ScoringConfig: {key} must be .*{top}"):
            ScoringConfig(**{key: top + 1})


@pytest.mark.parametrize("name", NAMES)
def test_size_hparams_are_bounded_for_every_method(name):
    cls = get_method(name)
    sizes = [k for k in ("z_dim", "width", "max_width", "d_width") if k in cls.DEFAULTS]
    assert sizes
    for key in sizes:
        with pytest.raises(ValueError, match=f"{key} must be an int in \\[1, {MAX_SIZE_HPARAM}\\]"):
            cls(16, 1, **{**TINY[name], key: MAX_SIZE_HPARAM + 1})


@pytest.mark.parametrize("edit, word", [
    (lambda m: {**m, "hparams": {**m["hparams"], "z_dim": 10 ** 9}}, "z_dim"),
    (lambda m: {**m, "hparams": {**m["hparams"], "width": 10 ** 6}}, "width"),
    (lambda m: {**m, "scoring": {**m["scoring"], "search_steps": 10 ** 12}}, "search_steps"),
    (lambda m: {**m, "scoring": {**m["scoring"], "batch_size": 10 ** 9}}, "batch_size"),
])
def test_a_file_asking_for_unbounded_work_is_refused_at_load(tmp_path, edit, word):
    det = tiny_detector("ganomaly")
    det.save(tmp_path / "ok.anomgan")
    rewrite(tmp_path / "ok.anomgan", tmp_path / "big.anomgan", meta=edit)
    with pytest.raises(BundleError, match=f"do not fit together.*{word}"):
        anomgan.load(tmp_path / "big.anomgan")
