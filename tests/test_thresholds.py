"""Threshold calibration rules and their JSON round trip."""
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from anomgan.scoring import thresholds as th
from anomgan.scoring.metrics import f1_max


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.3])
def test_fpr_is_smallest_threshold_meeting_target(seed, target):
    r = np.random.default_rng(seed)
    s = r.standard_normal(int(r.integers(5, 200))).astype(np.float32)
    if seed % 2:
        s = np.round(s * 3) / 3  # ties
    t = th.from_normal_fpr(s, target)
    n = len(s)
    fp = np.sum(s >= t.value)
    assert fp <= np.floor(target * n + 1e-9)
    assert t.params["achieved_fpr"] == fp / n and t.params["n_normal"] == n
    assert t.rule == "fpr" and t.params["target_fpr"] == target
    # any lower threshold (the next lower distinct score) exceeds the target
    lower = s[s < t.value]
    if lower.size:
        assert np.sum(s >= lower.max()) > np.floor(target * n + 1e-9)


def test_fpr_hand_cases_and_float32_exactness():
    s = [1.0, 2.0, 3.0, 3.0, 3.0]
    assert th.from_normal_fpr(s, 0.6).value == 3.0      # 3 of 5 allowed: the tie group fits
    t = th.from_normal_fpr(s, 0.2)                        # 1 allowed: even the top tie is 3
    assert t.value > 3.0 and t.params["achieved_fpr"] == 0.0
    assert th.from_normal_fpr(s, 0.8).value == 2.0
    # target 0 on float32 scores: no normal score is flagged, also in float32 comparisons
    x = torch.rand(1000)
    t = th.from_normal_fpr(x, 0.0)
    assert not t.classify(x).any() and not bool((x >= t.value).any())
    assert np.float32(t.value) == t.value                 # representable in float32


def test_quantile():
    r = np.random.default_rng(3)
    s = r.random(101)
    t = th.from_normal_quantile(torch.from_numpy(s), 0.9)
    assert t.value == pytest.approx(np.quantile(s, 0.9))
    assert t.params == {"q": 0.9, "n_normal": 101, "achieved_fpr": float(np.mean(s >= t.value))}


def test_f1_rule():
    r = np.random.default_rng(4)
    y = r.integers(0, 2, 80)
    y[:2] = [0, 1]
    s = r.random(80) + 0.4 * y
    t = th.from_labelled_f1(y, s)
    f1, v = f1_max(y, s)
    assert t.value == v and t.params == {"f1": f1, "n": 80, "n_anomalous": int(y.sum())}
    assert f1_score(y, t.classify(s)) == pytest.approx(f1)


@pytest.mark.parametrize("make", [
    lambda: th.from_normal_fpr(np.linspace(0, 1, 50), 0.1),
    lambda: th.from_normal_quantile([0.1, 0.5, 0.7], 0.5),
    lambda: th.from_labelled_f1([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.85]),
    lambda: th.fixed(0.25),
    lambda: th.from_normal_fpr(np.float32([0.1, 0.3]), 0.0),
])
def test_json_round_trip(make):
    t = make()
    d = json.loads(json.dumps(t.to_dict()))
    back = th.Threshold.from_dict(d)
    assert back == t and back.value == t.value  # bit-exact through JSON


def test_classify():
    t = th.fixed(0.5)
    assert t.classify([0.2, 0.5, 0.7]).tolist() == [False, True, True]
    out = t.classify(torch.tensor([0.2, 0.5, 0.7]))
    assert isinstance(out, torch.Tensor) and out.tolist() == [False, True, True]


def test_classify_flags_non_finite_scores_as_anomalous():
    """A score that cannot be compared (NaN, +-inf) never counts as normal (issue #16)."""
    t = th.fixed(0.5)
    s = [0.2, float("nan"), float("-inf"), float("inf"), 0.7]
    assert t.classify(s).tolist() == [False, True, True, True, True]
    assert t.classify(torch.tensor(s)).tolist() == [False, True, True, True, True]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_calibration_refuses_non_finite_scores(bad):
    s = [0.1, 0.2, bad, 0.4]
    with pytest.raises(ValueError, match="normal_scores contains (NaN|an infinite value) at index"):
        th.from_normal_fpr(s, 0.25)
    with pytest.raises(ValueError, match="normal_scores contains (NaN|an infinite value) at index"):
        th.from_normal_quantile(s, 0.5)
    with pytest.raises(ValueError, match="scores contains (NaN|an infinite value) at index"):
        th.from_labelled_f1([0, 1, 0, 1], s)


def test_errors():
    with pytest.raises(ValueError, match="target_fpr"):
        th.from_normal_fpr([0.1, 0.2], 1.0)
    with pytest.raises(ValueError, match="target_fpr"):
        th.from_normal_fpr([0.1, 0.2], -0.1)
    with pytest.raises(ValueError, match="q must be"):
        th.from_normal_quantile([0.1], 1.5)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        th.from_normal_fpr([], 0.1)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        th.from_normal_quantile(np.zeros((2, 2)), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        th.from_normal_fpr([0.1, float("nan")], 0.1)
    with pytest.raises(ValueError, match="only one class"):
        th.from_labelled_f1([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        th.Threshold(float("nan"), "fixed")
    with pytest.raises(ValueError, match="rule"):
        th.Threshold(0.1, "magic")
    with pytest.raises(ValueError, match="missing keys"):
        th.Threshold.from_dict({"value": 0.1})
    with pytest.raises(ValueError, match="unknown keys"):
        th.Threshold.from_dict({"value": 0.1, "rule": "fixed", "extra": 1})
    with pytest.raises(ValueError, match="expected a dict"):
        th.Threshold.from_dict([0.1, "fixed"])
