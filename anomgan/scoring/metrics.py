"""Evaluation metrics: image AUROC, ROC and PR curves, average precision (AUPR), F1-max,
precision / recall / F1 of given decisions, pixel AUROC and AUPRO (MVTec AD).

Every function accepts numpy arrays or torch tensors (any device; they are read on the CPU) and
returns Python floats; the curves (:func:`roc_curve`, :func:`pr_curve`) return float64 numpy
arrays.

Conventions
-----------
labels / masks : bool, or integers / floats that are exactly 0 or 1; 1 / True = anomalous.
scores / maps  : real numbers, higher = more anomalous; NaN or infinite values are errors.
A sample is predicted anomalous when ``score >= threshold`` (scikit-learn's convention).
Every metric needs both classes; a single class, mismatched lengths or shapes, empty input and
NaN scores raise ValueError (naming the argument and, for maps, the image index).

Exactness
---------
* :func:`roc_auc` equals ``sklearn.metrics.roc_auc_score``: the trapezoid rule over distinct
  thresholds, i.e. a tied (positive, negative) pair counts 1/2 (Mann-Whitney U).
* :func:`roc_auc_ci` is Newcombe's score interval for the AUROC (Newcombe 2006, "method 5"):
  the true AUROCs θ with (A − θ)² <= z² V(θ), A the measured AUROC, z the normal quantile of
  (1 + level) / 2 and V(θ) = θ(1 − θ)[1 + (N* − 1)(1 − θ)/(2 − θ) + (N* − 1)θ/(1 + θ)] / (m n)
  (Hanley & McNeil's variance at θ, N* = (m + n)/2; m anomalous, n normal images); the ends by
  bisection (60 halvings). Unlike A ± z sqrt(V(A)) (or DeLong's interval) it does not shrink to
  a point at A = 0 or 1, where a small test set is most often found "perfect".
* :func:`roc_auc_difference` is DeLong's paired comparison of two scores of the same images
  (DeLong, DeLong & Clarke-Pearson 1988): with ψ(x, y) = 1 if x > y, 1/2 if x = y, else 0,
  each score r gives every anomalous image i the placement V_ri = mean_j ψ(X_ri, Y_rj) and
  every normal image j the placement W_rj = mean_i ψ(X_ri, Y_rj) (from mid-ranks, Sun & Xu
  2014: O((m + n) log(m + n))); AUROC_r = mean_i V_ri, and
  var(AUROC_a − AUROC_b) = var_i(V_ai − V_bi) / m + var_j(W_aj − W_bj) / n (sample
  variances), which counts what the two scores share: on the same images a difference is
  measured far more tightly than two separate intervals suggest. Normal approximation for the
  interval and the two-sided p-value; needs >= 2 images of each class; zero width when both
  scores separate the classes perfectly.
* :func:`roc_curve` equals ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``;
  :func:`pr_curve` is ``sklearn.metrics.precision_recall_curve`` in the other order (threshold
  descending, from the point recall 0 / precision 1 at threshold +inf);
  :func:`average_precision` equals ``sklearn.metrics.average_precision_score`` (the step-wise
  sum of (R_k - R_k-1) P_k over the distinct thresholds, no interpolation).
* :func:`pixel_auroc` is exact by default. It never argsorts all pixels: it copies the normal
  pixels' values into one array (the map dtype; float16/bfloat16 are widened to float32, so
  4 bytes per normal pixel), sorts it in place and counts, for chunks of anomalous pixels, the
  normal pixels below / equal by binary search. With ``bins=K`` it streams the maps once per
  pass and keeps only two K-bin histograms: the result is then the exact AUROC of the scores
  quantised to K equal-width bins over [min, max]; its error is at most half the fraction of
  (anomalous, normal) pixel pairs that share a bin.
* :func:`aupro` is exact (same memory pattern: the normal pixels sorted once, the anomalous
  pixels with their region weights, the curve walked in chunks of whole tie groups, so about
  one float copy of the normal pixels plus ~100 MB of temporaries) and equals the MVTec AD
  evaluation code: 8-connected
  components of each ground-truth mask (``scipy.ndimage.label``), PRO(t) = mean over all
  components of the fraction of the component's pixels with score >= t, FPR(t) = fraction of
  defect-free pixels with score >= t, the piecewise-linear curve through every distinct
  threshold from (0, 0), integrated up to ``max_fpr`` (the last segment interpolated linearly)
  and divided by ``max_fpr``.
"""
from __future__ import annotations

from statistics import NormalDist
from typing import Iterator

import numpy as np
import torch

from .._validate import check_int, check_real

__all__ = ["roc_auc", "roc_auc_ci", "roc_auc_difference", "roc_curve", "pr_curve", "average_precision",
           "precision_recall_f1", "pixel_auroc", "aupro", "f1_max"]

_CHUNK = 1 << 20  # anomalous pixels per binary-search chunk


# ----------------------------------------------------------------------------- input handling
def _np(fn: str, name: str, x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        try:
            return np.asarray(x)
        except ValueError as e:
            raise ValueError(f"{fn}: {name} is a ragged or invalid sequence: {e}") from None
    raise TypeError(f"{fn}: {name} must be a numpy array, a torch tensor or a list, "
                    f"got {type(x).__name__}")


def _labels(fn: str, name: str, y: np.ndarray, where: str = "") -> np.ndarray:
    if y.dtype == np.bool_:
        return y
    if y.dtype.kind not in "iuf":
        raise TypeError(f"{fn}: {name}{where} must be bool or 0/1 numbers, got dtype {y.dtype}")
    ok = (y == 0) | (y == 1)
    if not ok.all():
        bad = y[~ok].ravel()[0]
        raise ValueError(f"{fn}: {name}{where} must contain only 0/1 (or bool), found {bad!r}")
    return y == 1


def _scores(fn: str, name: str, s: np.ndarray, where: str = "") -> np.ndarray:
    if s.dtype.kind not in "iuf" or s.dtype == np.bool_:
        raise TypeError(f"{fn}: {name}{where} must be real numbers, got dtype {s.dtype}")
    if s.dtype.kind == "f":
        if s.dtype == np.float16:
            s = s.astype(np.float32)
        fin = np.isfinite(s)
        if not fin.all():
            idx = np.unravel_index(int(np.argmin(fin)), s.shape)
            what = "NaN" if np.isnan(s[idx]) else "an infinite value"
            raise ValueError(f"{fn}: {name}{where} contains {what} at index {tuple(map(int, idx))}")
    else:
        s = s.astype(np.float64)
    return s


def _pair_1d(fn: str, labels, scores, name: str = "scores", check=None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, ``name``) as 1-D arrays of one non-zero length, labels 0/1 with both classes;
    the second array is checked by ``check`` (default :func:`_scores`)."""
    y = _np(fn, "labels", labels)
    s = _np(fn, name, scores)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"{fn}: labels and {name} must be 1-D, got shapes {y.shape} and {s.shape}")
    if len(y) != len(s):
        raise ValueError(f"{fn}: labels and {name} must have the same length, "
                         f"got {len(y)} and {len(s)}")
    if len(y) == 0:
        raise ValueError(f"{fn}: labels and {name} are empty")
    y = _labels(fn, "labels", y)
    s = (check or _scores)(fn, name, s)
    _both_classes(fn, "labels", int(y.sum()), int(y.size - y.sum()))
    return y, s


def _both_classes(fn: str, name: str, n_pos: int, n_neg: int) -> None:
    if n_pos == 0 or n_neg == 0:
        only = "normal (0)" if n_pos == 0 else "anomalous (1)"
        raise ValueError(f"{fn}: {name} contain only one class ({only}); the metric needs both "
                         "normal and anomalous samples")


def _images(fn: str, name: str, x) -> list:
    """Split (N, H, W), (H, W) or a sequence of (H, W) into per-image items (not yet numpy)."""
    if isinstance(x, (np.ndarray, torch.Tensor)):
        if x.ndim == 2:
            return [x]
        if x.ndim == 3:
            return [x[i] for i in range(x.shape[0])]
        raise ValueError(f"{fn}: {name} must be (N, H, W), (H, W) or a list of (H, W), "
                         f"got shape {tuple(x.shape)}")
    if isinstance(x, (list, tuple)):
        return list(x)
    raise TypeError(f"{fn}: {name} must be a numpy array, a torch tensor or a list of them, "
                    f"got {type(x).__name__}")


def _iter_maps(fn: str, maps, masks) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    ms, gs = _images(fn, "maps", maps), _images(fn, "masks", masks)
    if len(ms) != len(gs):
        raise ValueError(f"{fn}: maps and masks must hold the same number of images, "
                         f"got {len(ms)} and {len(gs)}")
    if not ms:
        raise ValueError(f"{fn}: maps and masks are empty")
    for i, (m, g) in enumerate(zip(ms, gs)):
        where = f"[{i}]"
        m, g = _np(fn, "maps" + where, m), _np(fn, "masks" + where, g)
        if m.ndim != 2 or m.shape != g.shape:
            raise ValueError(f"{fn}: maps{where} and masks{where} must be 2-D of one shape, "
                             f"got {m.shape} and {g.shape}")
        yield i, _scores(fn, "maps", m, where), _labels(fn, "masks", g, where)


def _check_bins(fn: str, bins) -> None:
    check_int(fn, "bins", bins, minimum=1, allow_none=True)


# ------------------------------------------------------------------------------- image level
def _auc_from_groups(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC from per-distinct-value counts (ascending value order): each negative counts the
    positives strictly above it plus half the tied ones."""
    P, N = int(pos.sum()), int(neg.sum())
    pos_above = P - np.cumsum(pos)
    twice = 2 * int(np.dot(neg.astype(np.int64), pos_above.astype(np.int64))) \
        + int(np.dot(neg.astype(np.int64), pos.astype(np.int64)))
    return twice / (2.0 * P * N)


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve of 1-D ``scores`` against 1-D ``labels`` (1 = anomalous).

    Ties are handled like ``sklearn.metrics.roc_auc_score`` (trapezoid over distinct
    thresholds). Raises ValueError for a single class, different lengths, empty input or NaN."""
    y, s = _pair_1d("roc_auc", labels, scores)
    _, inv = np.unique(s, return_inverse=True)
    inv = inv.ravel()
    pos = np.bincount(inv, weights=y.astype(np.float64), minlength=inv.max() + 1)
    pos = pos.astype(np.int64)
    cnt = np.bincount(inv, minlength=inv.max() + 1)
    return _auc_from_groups(pos, cnt - pos)


def _hanley_mcneil_var(theta: float, m: int, n: int) -> float:
    """Variance of the AUROC estimate at true AUROC ``theta`` with m anomalous and n normal
    images (Hanley & McNeil 1982 with Newcombe's N* = (m + n) / 2)."""
    k = (m + n) / 2.0 - 1.0
    return theta * (1 - theta) * (1 + k * (1 - theta) / (2 - theta) + k * theta / (1 + theta)) / (m * n)


def _two_sided_z(fn: str, level) -> float:
    """The standard normal quantile of (1 + level) / 2; ValueError naming ``fn`` unless level is
    in (0, 1)."""
    level = check_real(fn, "level", level, 0.0, 1.0, lo_open=True, hi_open=True)
    return NormalDist().inv_cdf((1 + level) / 2)


def roc_auc_ci(labels, scores, level: float = 0.95) -> tuple[float, float, float]:
    """(AUROC, lower, upper): :func:`roc_auc` and its ``level`` confidence interval (Newcombe's
    score interval, module doc). Same errors as :func:`roc_auc`; ValueError when ``level`` is
    not in (0, 1)."""
    z2 = _two_sided_z("roc_auc_ci", level) ** 2
    y, s = _pair_1d("roc_auc_ci", labels, scores)
    auc = roc_auc(y, s)
    m, n = int(y.sum()), int(y.size - y.sum())

    def inside(theta: float) -> bool:
        return (auc - theta) ** 2 <= z2 * _hanley_mcneil_var(theta, m, n)

    def boundary(outside: float, ins: float) -> float:
        """Bisection between a rejected and an accepted theta: the interval's end between them."""
        for _ in range(60):
            mid = (outside + ins) / 2
            outside, ins = (outside, mid) if inside(mid) else (mid, ins)
        return ins

    lower = 0.0 if inside(0.0) else boundary(0.0, auc)
    upper = 1.0 if inside(1.0) else boundary(1.0, auc)
    return auc, lower, upper


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks (float64)."""
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts).astype(np.float64)
    return ((upper - counts + 1 + upper) / 2.0)[inv.ravel()]


def _placements(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's placements (module doc) of the anomalous (m,) and normal (n,) images."""
    pos, neg = s[y == 1], s[y == 0]
    m, n = pos.size, neg.size
    ranks = _midranks(np.concatenate([pos, neg]))
    return (ranks[:m] - _midranks(pos)) / n, 1.0 - (ranks[m:] - _midranks(neg)) / m


def roc_auc_difference(labels, scores_a, scores_b, level: float = 0.95) -> dict[str, float]:
    """DeLong's paired comparison (module doc) of two scores of the same images:
    ``{"auroc_a", "auroc_b", "difference" (a - b), "lower", "upper" (its ``level`` interval),
    "p_value" (two-sided, no difference)}``. Same errors as :func:`roc_auc` for either score,
    ValueError when a class has fewer than 2 images or ``level`` is not in (0, 1)."""
    z = _two_sided_z("roc_auc_difference", level)
    y, a = _pair_1d("roc_auc_difference", labels, scores_a, "scores_a")
    _, b = _pair_1d("roc_auc_difference", labels, scores_b, "scores_b")
    m, n = int(y.sum()), int(y.size - y.sum())
    if m < 2 or n < 2:
        raise ValueError(f"roc_auc_difference: needs at least 2 images of each class, got {m} "
                         f"anomalous and {n} normal")
    (va, wa), (vb, wb) = _placements(y, a.astype(np.float64)), _placements(y, b.astype(np.float64))
    diff = float(va.mean() - vb.mean())
    se = float(np.sqrt((va - vb).var(ddof=1) / m + (wa - wb).var(ddof=1) / n))
    p = 2 * (1 - NormalDist().cdf(abs(diff) / se)) if se > 0 else float(diff == 0)
    return {"auroc_a": float(va.mean()), "auroc_b": float(vb.mean()), "difference": diff,
            "lower": diff - z * se, "upper": diff + z * se, "p_value": p}


def f1_max(labels, scores) -> tuple[float, float]:
    """(best F1, its threshold) over the thresholds t = each distinct score, predicting
    anomalous when ``score >= t`` (the points of ``sklearn.metrics.precision_recall_curve``).

    F1 = 2 TP / (2 TP + FP + FN). When several thresholds reach the best F1, the lowest one is
    returned (what ``thresholds[argmax(f1)]`` gives on scikit-learn's ascending thresholds).
    Raises ValueError for a single class, different lengths, empty input or NaN."""
    y, s = _pair_1d("f1_max", labels, scores)
    vals, inv = np.unique(s, return_inverse=True)
    inv = inv.ravel()
    pos = np.bincount(inv, weights=y.astype(np.float64), minlength=len(vals)).astype(np.int64)
    cnt = np.bincount(inv, minlength=len(vals)).astype(np.int64)
    # threshold = vals[k]: predicted positive are groups k..end
    tp = np.cumsum(pos[::-1])[::-1]
    pred = np.cumsum(cnt[::-1])[::-1]
    P = int(y.sum())
    f1 = 2.0 * tp / (pred + P).astype(np.float64)  # 2TP/(2TP+FP+FN) = 2TP/(pred + P)
    best = f1.max()
    k = int(np.flatnonzero(f1 == best)[0])
    return float(best), float(vals[k])


def _descending_counts(fn: str, labels, scores):
    """(thresholds, tp, fp, P, N): the distinct scores in descending order and, for each, the
    true / false positives when predicting anomalous at ``score >= threshold``."""
    y, s = _pair_1d(fn, labels, scores)
    vals, inv = np.unique(s, return_inverse=True)
    inv = inv.ravel()
    pos = np.bincount(inv, weights=y.astype(np.float64), minlength=len(vals)).astype(np.int64)
    cnt = np.bincount(inv, minlength=len(vals)).astype(np.int64)
    tp = np.cumsum(pos[::-1])
    fp = np.cumsum((cnt - pos)[::-1])
    return vals[::-1].astype(np.float64), tp, fp, int(tp[-1]), int(fp[-1])


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of the ROC curve, one point per distinct score.

    ``thresholds`` is descending and starts at +inf (the point (0, 0): nothing flagged); point
    k is the false / true positive rate of predicting anomalous at ``score >= thresholds[k]``,
    so the last point is (1, 1). Equals ``sklearn.metrics.roc_curve(labels, scores,
    drop_intermediate=False)``; the trapezoid area under it is :func:`roc_auc`. Raises
    ValueError for a single class, different lengths, empty input or NaN."""
    thr, tp, fp, P, N = _descending_counts("roc_curve", labels, scores)
    fpr = np.concatenate([[0.0], fp / N])
    tpr = np.concatenate([[0.0], tp / P])
    return fpr, tpr, np.concatenate([[np.inf], thr])


def pr_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recall, precision, thresholds) of the precision-recall curve, one point per distinct
    score.

    ``thresholds`` is descending and starts at +inf with the conventional point recall 0,
    precision 1; point k is the recall and precision of predicting anomalous at ``score >=
    thresholds[k]`` (recall ascends to 1). The same points as
    ``sklearn.metrics.precision_recall_curve``, which lists them in the other order (and
    leaves the +inf threshold out). Raises ValueError as :func:`roc_curve`."""
    thr, tp, fp, P, _ = _descending_counts("pr_curve", labels, scores)
    recall = np.concatenate([[0.0], tp / P])
    precision = np.concatenate([[1.0], tp / (tp + fp)])
    return recall, precision, np.concatenate([[np.inf], thr])


def average_precision(labels, scores) -> float:
    """Average precision (the area under the step-wise PR curve, "AUPR"): the sum over the
    distinct thresholds of (R_k - R_k-1) * P_k, without interpolation. Equals
    ``sklearn.metrics.average_precision_score``; a random scorer gets about the share of
    anomalous samples. Raises ValueError as :func:`roc_curve`."""
    recall, precision, _ = pr_curve(labels, scores)
    return float(np.sum(np.diff(recall) * precision[1:]))


def precision_recall_f1(labels, predicted) -> tuple[float, float, float]:
    """(precision, recall, F1) of the decisions ``predicted`` (1-D, bool or 0/1; 1 / True =
    predicted anomalous) against ``labels``. F1 = 2 TP / (2 TP + FP + FN); precision is 0.0
    when nothing is predicted anomalous (scikit-learn's ``zero_division=0``). Raises ValueError
    for a single class in ``labels``, different lengths, empty input or values other than 0/1."""
    y, p = _pair_1d("precision_recall_f1", labels, predicted, "predicted", _labels)
    tp = int(np.sum(y & p))
    n_pred, P = int(p.sum()), int(y.sum())
    precision = tp / n_pred if n_pred else 0.0
    return float(precision), tp / P, 2.0 * tp / (n_pred + P)


# ------------------------------------------------------------------------------- pixel level
def _gather(fn: str, maps, masks, with_regions: bool):
    """Two streaming passes: sorted normal-pixel values, anomalous-pixel values and (optionally)
    their per-pixel region weights 1/(component size) and the number of components."""
    from scipy import ndimage

    # pass 1: counts and dtype only (items are converted one at a time, never all at once)
    n_neg = n_pos = 0
    dtype = None
    for _, m, g in _iter_maps(fn, maps, masks):
        n_pos += int(g.sum())
        n_neg += int(g.size) - int(g.sum())
        dtype = m.dtype if dtype is None else np.result_type(dtype, m.dtype)
    _both_classes(fn, "masks", n_pos, n_neg)
    neg = np.empty(n_neg, dtype=dtype)
    pos = np.empty(n_pos, dtype=dtype)
    w = np.empty(n_pos, dtype=np.float64) if with_regions else None
    n_regions = 0
    a = b = 0
    structure = np.ones((3, 3), dtype=bool)  # 8-connectivity, as MVTec AD
    for _, m, g in _iter_maps(fn, maps, masks):  # pass 2: fill
        k = int(g.size - g.sum())
        neg[a:a + k] = m[~g]
        a += k
        k = int(g.sum())
        if k:
            pos[b:b + k] = m[g]
            if with_regions:
                lab, n = ndimage.label(g, structure=structure)
                sizes = np.bincount(lab.ravel())
                w[b:b + k] = 1.0 / sizes[lab[g]]
                n_regions += n
        b += k
    neg.sort()
    return neg, pos, w, n_regions


def pixel_auroc(maps, masks, *, bins: int | None = None) -> float:
    """AUROC over all pixels of anomaly ``maps`` against ground-truth ``masks``.

    maps, masks: (N, H, W), (H, W), or sequences of (H, W) (sizes may differ between images);
    mask True / 1 = defect pixel. ``bins=None``: exact (equals ``roc_auc_score`` on the
    flattened pixels; memory = one copy of the normal pixels). ``bins=K``: histogram
    approximation with O(K) extra memory (see the module docstring for its error bound)."""
    fn = "pixel_auroc"
    if bins is not None:
        _check_bins(fn, bins)
        return _pixel_auroc_hist(maps, masks, bins)
    neg, pos, _, _ = _gather(fn, maps, masks, with_regions=False)
    twice = 0
    for i in range(0, len(pos), _CHUNK):
        p = pos[i:i + _CHUNK]
        twice += int(np.searchsorted(neg, p, "left").sum()) + \
            int(np.searchsorted(neg, p, "right").sum())
    return twice / (2.0 * len(pos) * len(neg))


def _pixel_auroc_hist(maps, masks, bins: int) -> float:
    fn = "pixel_auroc"
    lo, hi, n_pos, n_neg = np.inf, -np.inf, 0, 0
    for _, m, g in _iter_maps(fn, maps, masks):
        lo, hi = min(lo, float(m.min())), max(hi, float(m.max()))
        n_pos += int(g.sum())
        n_neg += int(g.size - g.sum())
    _both_classes(fn, "masks", n_pos, n_neg)
    pos = np.zeros(bins, dtype=np.int64)
    neg = np.zeros(bins, dtype=np.int64)
    scale = bins / (hi - lo) if hi > lo else 0.0
    for _, m, g in _iter_maps(fn, maps, masks):
        idx = np.minimum(((m.astype(np.float64) - lo) * scale).astype(np.int64), bins - 1)
        pos += np.bincount(idx[g], minlength=bins)
        neg += np.bincount(idx[~g], minlength=bins)
    return _auc_from_groups(pos, neg)


def aupro(maps, masks, *, max_fpr: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve up to ``max_fpr`` (MVTec AD).

    maps, masks as in :func:`pixel_auroc`. Regions are the 8-connected components of each
    image's mask; every region weighs the same whatever its size. Returns
    (area under PRO(FPR) for FPR in [0, max_fpr]) / max_fpr, in [0, 1]."""
    fn = "aupro"
    max_fpr = check_real(fn, "max_fpr", max_fpr, 0.0, 1.0, lo_open=True)
    neg, pos, w, n_regions = _gather(fn, maps, masks, with_regions=True)
    N = len(neg)
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    cw = np.concatenate([[0.0], np.cumsum(w[order]) / n_regions])
    total = cw[-1]
    # walk the normal values from the top down, as far as FPR = max_fpr, in chunks of whole
    # tie groups (bounded temporaries); each group is one segment of the curve
    k = min(N, int(np.ceil(max_fpr * N)))
    top = neg[N - k:]                                    # ascending, already sorted
    area, done, hi = 0.0, 0, k                           # done: normal pixels above the chunk
    while hi > 0:
        lo = max(0, hi - _CHUNK)
        lo = int(np.searchsorted(top, top[lo], "left"))  # never split a tie group
        chunk = top[lo:hi]
        starts = np.flatnonzero(np.concatenate([[True], chunk[1:] != chunk[:-1]]))
        vals = chunk[starts][::-1]                       # distinct values, descending
        cnt = np.diff(np.append(starts, len(chunk)))[::-1].copy()
        if lo == 0:  # the lowest group may continue below the cut: count it in full
            v = vals[-1]
            cnt[-1] = np.searchsorted(neg, v, "right") - np.searchsorted(neg, v, "left")
        c1 = done + np.cumsum(cnt)
        x1, x0 = c1 / N, (c1 - cnt) / N
        y1 = total - cw[np.searchsorted(pos, vals, "left")]    # PRO(score >= v)
        y0 = total - cw[np.searchsorted(pos, vals, "right")]   # PRO(score > v)
        full = x1 <= max_fpr
        area += float(np.sum((x1[full] - x0[full]) * (y0[full] + y1[full]) / 2))
        part = np.flatnonzero(~full)
        if part.size:
            j = int(part[0])
            if x0[j] < max_fpr:
                yi = y0[j] + (y1[j] - y0[j]) * (max_fpr - x0[j]) / (x1[j] - x0[j])
                area += (max_fpr - x0[j]) * (y0[j] + yi) / 2
            break
        done, hi = int(c1[-1]), lo
    return area / max_fpr
