"""Decision thresholds: calibrated once, stored in the Detector, applied to image scores.

An image is anomalous when ``score >= threshold.value`` (the convention of
:mod:`anomgan.scoring.metrics` and scikit-learn), and always when its score is not finite (NaN
or ±inf: a score that cannot be compared never counts as normal). Calibration refuses
non-finite scores (ValueError naming the first one) rather than produce a NaN threshold. Rules:

* ``"fpr"``      (normal validation scores only) the smallest threshold whose false-positive
  rate on those scores is <= ``target_fpr``. It is a data value (one of the normal scores) or,
  when even the top score must pass (e.g. ``target_fpr`` < 1/n), the next float32 above the
  largest normal score, so it stays exact when compared with float32 scores.
* ``"quantile"`` (normal validation scores only) ``numpy.quantile(scores, q)`` with linear
  interpolation; the empirical FPR is then about 1 - q (not guaranteed).
* ``"f1"``       (labelled scores) the F1-optimal threshold of :func:`anomgan.scoring.metrics.f1_max`.
* ``"fixed"``    a value set by hand.

:class:`Threshold` is a frozen dataclass; ``to_dict()`` gives plain JSON-able data and
``Threshold.from_dict`` validates it back (ValueError on anything malformed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._validate import check_choice, check_real
from . import metrics

__all__ = ["Threshold", "RULES", "from_normal_fpr", "from_normal_quantile", "from_labelled_f1",
           "fixed"]

RULES = ("fpr", "quantile", "f1", "fixed")


@dataclass(frozen=True)
class Threshold:
    """value: the threshold (score >= value is anomalous); rule: one of RULES; params: the
    rule's inputs and what calibration measured (JSON-able numbers / strings)."""
    value: float
    rule: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        check_real("Threshold", "value", self.value)
        check_choice("Threshold", "rule", self.rule, RULES)
        if not isinstance(self.params, dict) or not all(isinstance(k, str) for k in self.params):
            raise ValueError(f"Threshold: params must be a dict with str keys, got {self.params!r}")
        object.__setattr__(self, "value", float(self.value))

    def classify(self, scores):
        """Boolean anomalous flags ``scores >= value`` (torch in -> torch bool, else numpy);
        a score that is not finite (NaN, ±inf) is always flagged anomalous."""
        if isinstance(scores, torch.Tensor):
            s = scores.double()
            return (s >= self.value) | ~torch.isfinite(s)
        s = np.asarray(scores, dtype=np.float64)
        return (s >= self.value) | ~np.isfinite(s)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "rule": self.rule, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Threshold":
        if not isinstance(d, dict):
            raise ValueError(f"Threshold.from_dict: expected a dict, got {type(d).__name__}")
        missing = {"value", "rule"} - set(d)
        extra = set(d) - {"value", "rule", "params"}
        if missing or extra:
            raise ValueError(f"Threshold.from_dict: missing keys {sorted(missing)}, "
                             f"unknown keys {sorted(extra)}")
        return cls(d["value"], d["rule"], dict(d.get("params", {})))


def _normal_scores(fn: str, scores) -> np.ndarray:
    s = metrics._np(fn, "normal_scores", scores)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"{fn}: normal_scores must be a non-empty 1-D array, got shape {s.shape}")
    return metrics._scores(fn, "normal_scores", s).astype(np.float64)


def _above(x: float) -> float:
    """The smallest float32 strictly greater than x (as a Python float)."""
    v = np.float32(x)
    if float(v) <= x:
        v = np.nextafter(v, np.float32(np.inf))
    return float(v)


def from_normal_fpr(normal_scores, target_fpr: float) -> Threshold:
    """Smallest threshold with (#normal scores >= threshold) <= floor(target_fpr * n).

    target_fpr in [0, 1). params: target_fpr, n_normal, achieved_fpr (on these scores)."""
    fn = "from_normal_fpr"
    check_real(fn, "target_fpr", target_fpr, 0.0, 1.0, hi_open=True)
    s = np.sort(_normal_scores(fn, normal_scores))[::-1]  # descending
    n = len(s)
    allowed = int(math.floor(float(target_fpr) * n + 1e-9))
    vals, first = np.unique(-s, return_index=True)  # distinct values, descending, first index
    n_ge = np.append(first[1:], n)                  # (#scores >= each distinct value)
    ok = np.flatnonzero(n_ge <= allowed)
    value = float(-vals[ok[-1]]) if ok.size else _above(float(s[0]))
    achieved = float(np.sum(s >= value)) / n
    return Threshold(value, "fpr", {"target_fpr": float(target_fpr), "n_normal": n,
                                    "achieved_fpr": achieved})


def from_normal_quantile(normal_scores, q: float) -> Threshold:
    """``numpy.quantile(normal_scores, q)`` (linear interpolation), q in [0, 1].
    params: q, n_normal, achieved_fpr (on these scores)."""
    fn = "from_normal_quantile"
    check_real(fn, "q", q, 0.0, 1.0)
    s = _normal_scores(fn, normal_scores)
    value = float(np.quantile(s, float(q)))
    return Threshold(value, "quantile", {"q": float(q), "n_normal": len(s),
                                         "achieved_fpr": float(np.mean(s >= value))})


def from_labelled_f1(labels, scores) -> Threshold:
    """The F1-optimal threshold on labelled scores (1 = anomalous; both classes needed).
    params: f1, n, n_anomalous."""
    f1, value = metrics.f1_max(labels, scores)
    y = metrics._labels("from_labelled_f1", "labels", metrics._np("from_labelled_f1", "labels",
                                                                   labels))
    return Threshold(value, "f1", {"f1": f1, "n": int(y.size), "n_anomalous": int(y.sum())})


def fixed(value: float) -> Threshold:
    """A threshold set by hand."""
    return Threshold(value, "fixed", {})
