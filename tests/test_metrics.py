"""Metrics against scikit-learn, an independent MVTec-style PRO oracle and hand-computed cases."""
import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_curve, roc_auc_score

from anomgan.scoring.metrics import aupro, f1_max, pixel_auroc, roc_auc, roc_auc_ci, roc_auc_difference


def _rng(seed):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------ roc_auc
@pytest.mark.parametrize("seed", range(6))
def test_roc_auc_matches_sklearn(seed):
    r = _rng(seed)
    n = int(r.integers(2, 80))
    y = r.integers(0, 2, n)
    y[:2] = [0, 1]
    s_cont = r.standard_normal(n)
    s_ties = r.integers(0, 4, n).astype(np.float32)  # many ties
    for s in (s_cont, s_ties):
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_auc_hand_cases_and_input_types():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    # pos 2 vs neg 1: win, pos 2 vs neg 2: tie -> (1 + 0.5) / 2
    assert roc_auc([0, 0, 1], [1, 2, 2]) == pytest.approx(0.75)
    assert roc_auc([True, False], [0.0, 1.0]) == 0.0
    y = torch.tensor([0, 1, 1, 0], dtype=torch.bool)
    s = torch.tensor([0.2, 0.3, 0.9, 0.4])
    want = roc_auc_score(y.numpy(), s.numpy())
    assert roc_auc(y, s) == pytest.approx(want)
    assert roc_auc(y.float(), s.half()) == pytest.approx(want)
    assert roc_auc(y.numpy().astype(np.int64), s.double().numpy()) == pytest.approx(want)
    assert roc_auc(y.tolist(), s.tolist()) == pytest.approx(want)
    assert roc_auc([0, 1, 1, 0], [2, 3, 9, 4]) == pytest.approx(want)  # integer scores


@pytest.mark.parametrize("fn", [roc_auc, f1_max])
def test_label_score_errors(fn):
    with pytest.raises(ValueError, match="only one class"):
        fn([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only one class"):
        fn(np.zeros(3), [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="same length, got 3 and 2"):
        fn([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"NaN at index \(1,\)"):
        fn([0, 1, 1], [0.1, float("nan"), 0.3])
    with pytest.raises(ValueError, match="infinite"):
        fn([0, 1], torch.tensor([0.1, float("inf")]))
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="1-D"):
        fn(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="only 0/1"):
        fn([0, 2], [0.1, 0.2])
    with pytest.raises(TypeError, match="real numbers"):
        fn([0, 1], np.array(["a", "b"]))
    with pytest.raises(TypeError, match="numpy array, a torch tensor"):
        fn({0, 1}, [0.1, 0.2])


# ------------------------------------------------------------------------------------- f1_max
def _sklearn_f1_max(y, s):
    """(best F1, lowest threshold reaching it up to rounding) from precision_recall_curve."""
    p, r, t = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)[:-1]
    best = f.max()
    return best, t[f >= best - 1e-12].min()


@pytest.mark.parametrize("seed", range(6))
def test_f1_max_matches_sklearn(seed):
    r = _rng(100 + seed)
    n = int(r.integers(2, 60))
    y = r.integers(0, 2, n)
    y[:2] = [0, 1]
    s = r.random(n)
    f1, thr = f1_max(y, s)
    f1_ref, thr_ref = _sklearn_f1_max(y, s)
    assert f1 == pytest.approx(f1_ref, abs=1e-12)
    assert thr == thr_ref
    # with ties the best F1 is still the same value; its threshold reaches it
    s = np.round(s * 4) / 4
    f1, thr = f1_max(y, s)
    assert f1 == pytest.approx(_sklearn_f1_max(y, s)[0], abs=1e-12)
    pred = s >= thr
    tp, fp, fn = np.sum(pred & (y == 1)), np.sum(pred & (y == 0)), np.sum(~pred & (y == 1))
    assert f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_f1_max_hand_cases():
    # thresholds 0.9: 2/3, 0.85: 1/2, 0.8: 4/5, 0.1: 2/3
    assert f1_max([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.85]) == (pytest.approx(0.8), 0.8)
    # F1 = 2/3 at thresholds 4 and 1: the lowest wins
    f1, thr = f1_max(torch.tensor([1, 0, 0, 1]), torch.tensor([4.0, 3.0, 2.0, 1.0]))
    assert f1 == pytest.approx(2 / 3) and thr == 1.0
    # perfect separation
    assert f1_max([0, 0, 1], [0.1, 0.2, 0.7]) == (1.0, pytest.approx(0.7))


# -------------------------------------------------------------------------------- pixel_auroc
def test_pixel_auroc_matches_sklearn():
    r = _rng(7)
    maps = r.random((4, 17, 23)).astype(np.float32)
    masks = r.random((4, 17, 23)) > 0.85
    want = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(maps, masks) == pytest.approx(want, abs=1e-12)
    assert pixel_auroc(torch.from_numpy(maps), torch.from_numpy(masks)) == \
        pytest.approx(want, abs=1e-12)
    assert pixel_auroc(maps[1], masks[1]) == \
        pytest.approx(roc_auc_score(masks[1].ravel(), maps[1].ravel()), abs=1e-12)
    q = np.round(maps * 8) / 8  # heavy ties
    assert pixel_auroc(q, masks.astype(np.uint8)) == \
        pytest.approx(roc_auc_score(masks.ravel(), q.ravel()), abs=1e-12)
    # images of different sizes in a list; the first one without defects
    ms = [maps[0, :5, :9], maps[1], maps[2, :, :4]]
    gs = [np.zeros((5, 9), bool), masks[1], masks[2, :, :4]]
    want = roc_auc_score(np.concatenate([g.ravel() for g in gs]),
                         np.concatenate([m.ravel() for m in ms]))
    assert pixel_auroc(ms, gs) == pytest.approx(want, abs=1e-12)


def test_pixel_auroc_bins():
    r = _rng(8)
    maps = r.random((3, 20, 20))
    masks = r.random((3, 20, 20)) > 0.9
    exact = pixel_auroc(maps, masks)
    for bins in (16, 256, 4096):
        idx = np.minimum((maps * bins / (maps.max() - maps.min())).astype(int), bins - 1)
        # error bound: half the fraction of (pos, neg) pairs that share a bin
        pb = np.bincount(idx[masks].ravel(), minlength=bins)
        nb = np.bincount(idx[~masks].ravel(), minlength=bins)
        bound = 0.5 * np.dot(pb, nb) / (masks.sum() * (~masks).sum())
        assert abs(pixel_auroc(maps, masks, bins=bins) - exact) <= bound + 1e-12
    # values that fall one per bin: the histogram result is exact
    q = r.integers(0, 11, (3, 20, 20)) / 10
    assert pixel_auroc(q, masks, bins=11) == pytest.approx(pixel_auroc(q, masks), abs=1e-12)
    with pytest.raises(ValueError, match="bins"):
        pixel_auroc(maps, masks, bins=0)


@pytest.mark.parametrize("fn", [pixel_auroc, aupro])
def test_pixel_errors(fn):
    maps = np.random.default_rng(0).random((2, 4, 4))
    masks = np.zeros((2, 4, 4), bool)
    masks[1, 1, 1] = True
    with pytest.raises(ValueError, match="only one class"):
        fn(maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="only one class"):
        fn(maps, np.ones_like(masks))
    with pytest.raises(ValueError, match="same number of images, got 2 and 1"):
        fn(maps, masks[:1])
    with pytest.raises(ValueError, match=r"maps\[1\] and masks\[1\]"):
        fn([maps[0], maps[1]], [masks[0], masks[1, :3]])
    bad = maps.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"maps\[1\] contains NaN at index \(2, 3\)"):
        fn(bad, masks)
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        fn(maps[None], masks[None])


# -------------------------------------------------------------------------------------- aupro
def _pro_oracle(maps, masks, max_fpr):
    """The MVTec AD recipe, written out independently: all pixels sorted, cumulative FP and
    per-region overlap, ties collapsed, trapezoid with linear interpolation at max_fpr."""
    from scipy.ndimage import label

    fp, pro, scores = [], [], []
    n_ok = n_regions = 0
    for m, g in zip(maps, masks):
        lab, n = label(g, structure=np.ones((3, 3)))
        pc = np.zeros(g.shape)
        for k in range(1, n + 1):
            pc[lab == k] = 1.0 / np.sum(lab == k)
        fp.append((lab == 0).ravel().astype(float))
        pro.append(pc.ravel())
        scores.append(np.asarray(m, float).ravel())
        n_ok += int(np.sum(lab == 0))
        n_regions += n
    s, fp, pro = map(np.concatenate, (scores, fp, pro))
    o = np.argsort(-s, kind="stable")
    s, fpr, prov = s[o], np.cumsum(fp[o]) / n_ok, np.cumsum(pro[o]) / n_regions
    keep = np.append(np.diff(s) != 0, True)
    x = np.concatenate([[0.0], fpr[keep], [1.0]])
    y = np.concatenate([[0.0], prov[keep], [1.0]])
    area = 0.0
    for i in range(1, len(x)):
        if x[i] <= max_fpr:
            area += (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2
        else:
            if x[i - 1] < max_fpr:
                yi = y[i - 1] + (y[i] - y[i - 1]) * (max_fpr - x[i - 1]) / (x[i] - x[i - 1])
                area += (max_fpr - x[i - 1]) * (y[i - 1] + yi) / 2
            break
    return area / max_fpr


def test_aupro_hand_case():
    m = np.array([[0.9, 0.5, 0.4, 0.9],
                  [0.3, 0.2, 0.1, 0.1],
                  [0.1, 0.1, 0.8, 0.2]])
    g = np.zeros((3, 4), bool)
    g[0, 3] = True                        # region A: score 0.9 (tied with a normal pixel)
    g[1, 1] = g[2, 2] = g[2, 3] = True    # region B, joined diagonally (8-connectivity)
    # 8 normal pixels. Curve: (0,0)-(1/8,1/2) [tie: diagonal], (1/8,2/3) at 0.8,
    # (2/8,2/3) at 0.5, (3/8,2/3) at 0.4, cut at 0.3:
    # area = 1/32 + 1/12 + 1/30 = 71/480, normalised by 0.3 -> 71/144
    assert aupro(m, g) == pytest.approx(71 / 144, abs=1e-12)
    assert aupro(torch.tensor(m)[None], torch.tensor(g)[None]) == pytest.approx(71 / 144)
    assert aupro(m, g) == pytest.approx(_pro_oracle([m], [g], 0.3), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
def test_aupro_matches_oracle(seed, max_fpr):
    r = _rng(200 + seed)
    n, h, w = 3, 19, 21
    masks = np.zeros((n, h, w), bool)
    for i in range(1, n):   # image 0 is defect-free
        for _ in range(int(r.integers(1, 4))):
            y, x = r.integers(0, h - 4), r.integers(0, w - 4)
            masks[i, y:y + r.integers(1, 5), x:x + r.integers(1, 5)] = True
    maps = r.random((n, h, w)).astype(np.float32) + masks * r.random() * 0.7
    for m in (maps, np.round(maps * 6) / 6):      # continuous and heavily tied
        got = aupro(m, masks, max_fpr=max_fpr)
        assert got == pytest.approx(_pro_oracle(m, masks, max_fpr), abs=1e-9)
        assert 0.0 <= got <= 1.0


def test_aupro_single_region_full_range_is_pixel_auroc():
    r = _rng(9)
    m = r.random((12, 12))
    g = np.zeros((12, 12), bool)
    g[3:7, 4:9] = True
    m[g] += 0.3
    assert aupro(m, g, max_fpr=1.0) == pytest.approx(pixel_auroc(m, g), abs=1e-12)


def test_aupro_perfect_and_bad_max_fpr():
    g = np.zeros((2, 8, 8), bool)
    g[0, 2:4, 2:4] = g[1, 5:7, 1:3] = True
    assert aupro(g.astype(float), g) == pytest.approx(1.0)
    for bad, error in ((0, ValueError), (-0.1, ValueError), (1.5, ValueError), (True, TypeError),
                       ("0.3", TypeError)):
        with pytest.raises(error, match="max_fpr"):
            aupro(g.astype(float), g, max_fpr=bad)


@pytest.mark.parametrize("chunk", [1, 7, 50])
def test_chunked_paths_agree(monkeypatch, chunk):
    """Tiny chunks exercise the chunk loops (tie groups wider than a chunk included)."""
    import anomgan.scoring.metrics as M

    r = _rng(300 + chunk)
    masks = np.zeros((2, 15, 16), bool)
    masks[0, 2:6, 3:9] = masks[1, 9:12, 1:4] = masks[1, 0, 15] = True
    # one grid of 7 values for normal and defect pixels: ties across the classes
    maps = (r.integers(0, 6, (2, 15, 16)) + r.integers(0, 2, (2, 15, 16)) * masks) / 6
    want_pro = {f: _pro_oracle(maps, masks, f) for f in (0.3, 1.0)}
    want_auc = roc_auc_score(masks.ravel(), maps.ravel())
    monkeypatch.setattr(M, "_CHUNK", chunk)
    for f, want in want_pro.items():  # 0.3 cuts inside a tie group
        assert M.aupro(maps, masks, max_fpr=f) == pytest.approx(want, abs=1e-12)
    assert M.pixel_auroc(maps, masks) == pytest.approx(want_auc, abs=1e-12)


# ---- roc_auc_ci: Newcombe's score interval -------------------------------------------------------
def _newcombe_reference(auc, m, n, level):
    """float64 grid search: the smallest and largest theta on a 1e-6 grid inside the interval."""
    from statistics import NormalDist

    theta = np.linspace(0, 1, 1_000_001)
    k = (m + n) / 2 - 1
    var = theta * (1 - theta) * (1 + k * (1 - theta) / (2 - theta) + k * theta / (1 + theta)) / (m * n)
    ok = (auc - theta) ** 2 <= NormalDist().inv_cdf((1 + level) / 2) ** 2 * var
    return theta[ok].min(), theta[ok].max()


@pytest.mark.parametrize("m, n, ties, level, shift", [(2, 3, False, 0.95, 0.7), (7, 50, True, 0.9, 0.7),
                                                      (300, 301, True, 0.95, 0.7), (40, 9, False, 0.5, 0.7),
                                                      (1, 1, False, 0.95, 0.7), (12, 20, False, 0.95, 9.0)])
def test_roc_auc_ci_matches_a_float64_grid_search(m, n, ties, level, shift):
    rng = np.random.default_rng(m * 1000 + n)
    s = np.concatenate([rng.normal(shift, 1, m), rng.normal(0, 1, n)])
    if ties:
        s = np.round(s * 2) / 2                       # many tied scores, across the classes
    y = np.r_[np.ones(m, int), np.zeros(n, int)]
    perm = rng.permutation(m + n)
    y, s = y[perm], s[perm].astype(np.float32)
    auc, lo, hi = roc_auc_ci(y, s, level)
    assert auc == roc_auc(y, s)
    want_lo, want_hi = _newcombe_reference(auc, m, n, level)
    assert lo == pytest.approx(want_lo, abs=2e-6) and hi == pytest.approx(want_hi, abs=2e-6)
    assert 0 <= lo <= auc <= hi <= 1
    if shift > 5:                                     # separated: AUROC 1, yet an interval below it
        assert auc == 1.0 and hi == 1.0 and 0.5 < lo < 0.95
    # torch input, bool labels: the same
    assert roc_auc_ci(torch.from_numpy(y.astype(bool)), torch.from_numpy(s), level) == (auc, lo, hi)


def test_roc_auc_ci_covers_the_true_auroc_at_its_level():
    """Binormal scores (anomalous ~ N(d, 1), normal ~ N(0, 1)): true AUROC = Phi(d / sqrt 2).
    Over 400 seeded draws of 40 + 60 images the 95 % interval holds it 91-99 % of the time; a
    variance off by the sample sizes lands far outside. More images, a narrower interval."""
    from statistics import NormalDist

    for d in (1.2, 2.5):                              # true AUROC 0.80 and 0.96
        true = NormalDist().cdf(d / np.sqrt(2))
        rng = np.random.default_rng(0)
        y = np.r_[np.ones(40, int), np.zeros(60, int)]
        hits = 0
        for _ in range(400):
            s = np.concatenate([rng.normal(d, 1, 40), rng.normal(0, 1, 60)])
            _, lo, hi = roc_auc_ci(y, s)
            hits += lo <= true <= hi
        assert 0.91 <= hits / 400 <= 0.99, (d, hits)
    pos, neg = np.arange(10) + 3.0, np.arange(10.0)
    small = roc_auc_ci(np.r_[np.ones(10), np.zeros(10)], np.r_[pos, neg])
    large = roc_auc_ci(np.r_[np.ones(100), np.zeros(100)], np.r_[np.repeat(pos, 10), np.repeat(neg, 10)])
    assert small[0] == large[0] == 0.755                  # the same AUROC from 10x the images
    assert large[2] - large[1] < (small[2] - small[1]) / 2


def test_roc_auc_ci_errors():
    for bad in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="level"):
            roc_auc_ci([1, 0], [1.0, 0.0], bad)
    with pytest.raises(TypeError, match="level"):
        roc_auc_ci([1, 0], [1.0, 0.0], "0.95")
    with pytest.raises(ValueError, match="roc_auc_ci"):
        roc_auc_ci([1, 1], [1.0, 0.0])
    with pytest.raises(ValueError, match="roc_auc_ci"):
        roc_auc_ci([1, 0], [1.0, float("nan")])


# ---- roc_auc_difference: DeLong's paired comparison ---------------------------------------------
def _paired_reference(y, a, b):
    """float64, O(m n): placements from the pairwise kernel, DeLong's variance of a - b."""
    def place(s):
        pos, neg = s[y == 1].astype(np.float64), s[y == 0].astype(np.float64)
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(1), psi.mean(0), psi.mean()
    va, wa, auc_a = place(a)
    vb, wb, auc_b = place(b)
    m, n = va.size, wa.size
    s10 = np.cov(np.stack([va, vb]))
    s01 = np.cov(np.stack([wa, wb]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return auc_a, auc_b, np.sqrt(var)


@pytest.mark.parametrize("m, n, ties", [(2, 2, False), (9, 31, True), (250, 120, True)])
def test_roc_auc_difference_matches_the_pairwise_float64_delong(m, n, ties):
    from statistics import NormalDist

    rng = np.random.default_rng(m + 7 * n)
    y = rng.permutation(np.r_[np.ones(m, int), np.zeros(n, int)])
    shared = rng.normal(0, 1, m + n)
    a = shared + 0.9 * y + rng.normal(0, 0.7, m + n)
    b = shared + 0.6 * y + rng.normal(0, 0.7, m + n)
    if ties:
        a, b = np.round(a * 2) / 2, np.round(b * 2) / 2
    a, b = a.astype(np.float32), b.astype(np.float32)
    got = roc_auc_difference(y, a, b, 0.9)
    auc_a, auc_b, se = _paired_reference(y, a, b)
    z = NormalDist().inv_cdf(0.95)
    assert got["auroc_a"] == pytest.approx(auc_a, abs=1e-12) == roc_auc(y, a)
    assert got["auroc_b"] == pytest.approx(auc_b, abs=1e-12) == roc_auc(y, b)
    assert got["difference"] == pytest.approx(auc_a - auc_b, abs=1e-12)
    assert got["lower"] == pytest.approx(auc_a - auc_b - z * se, abs=1e-12)
    assert got["upper"] == pytest.approx(auc_a - auc_b + z * se, abs=1e-12)
    assert got["p_value"] == pytest.approx(2 * (1 - NormalDist().cdf(abs(auc_a - auc_b) / se)), abs=1e-12)
    swapped = roc_auc_difference(y, b, a, 0.9)                   # antisymmetric, same p-value
    assert swapped["difference"] == pytest.approx(-got["difference"], abs=1e-15)
    assert swapped["p_value"] == pytest.approx(got["p_value"], abs=1e-15)
    same = roc_auc_difference(torch.from_numpy(y.astype(bool)), torch.from_numpy(a), torch.from_numpy(a))
    assert (same["difference"], same["lower"], same["upper"], same["p_value"]) == (0.0, 0.0, 0.0, 1.0)


def test_roc_auc_difference_holds_its_level_and_is_tighter_than_separate_intervals():
    """Two correlated scores with the same true AUROC: the 95 % interval of the difference holds 0
    in 91-99 % of 400 seeded draws (40 + 60 images), and is narrower than either score's own
    interval, because the images are shared."""
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(40, int), np.zeros(60, int)]
    hits, ratio = 0, []
    for _ in range(400):
        shared = rng.normal(0, 1, 100) + 1.0 * y
        a, b = shared + rng.normal(0, 0.5, 100), shared + rng.normal(0, 0.5, 100)
        d = roc_auc_difference(y, a, b)
        hits += d["lower"] <= 0 <= d["upper"]
        _, lo, hi = roc_auc_ci(y, a)
        ratio.append((d["upper"] - d["lower"]) / (hi - lo))
    assert 0.91 <= hits / 400 <= 0.99, hits
    assert np.median(ratio) < 0.85      # two independent intervals would be ~1.4x one interval


def test_roc_auc_difference_errors():
    with pytest.raises(ValueError, match="at least 2"):
        roc_auc_difference([1, 0, 0], [0.5, 0.1, 0.2], [0.4, 0.3, 0.2])
    with pytest.raises(ValueError, match="scores_b"):
        roc_auc_difference([1, 1, 0, 0], [0.5, 0.6, 0.1, 0.2], [0.4, 0.3, 0.2])
    with pytest.raises(ValueError, match="scores_a"):
        roc_auc_difference([1, 1, 0, 0], [0.5, float("inf"), 0.1, 0.2], [0.4, 0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="level"):
        roc_auc_difference([1, 1, 0, 0], [0.5, 0.6, 0.1, 0.2], [0.4, 0.3, 0.2, 0.1], 1.0)
