"""Measure a detector on labelled images: ``anomgan.evaluate`` and ``anomgan evaluate``.

The detector scores normal and anomalous images exactly as :meth:`anomgan.Detector.detect` does
(same preprocessing, same input mode, same threshold). From the image scores come the image
AUROC with its 95 % confidence interval (Newcombe's score interval: with 50 defects and 150
normals it spans about 0.79-0.91 around 0.85, so a smaller difference between two detectors on
such a set is not yet evidence), the AUPR (average precision), precision / recall / F1 at the
detector's threshold and the best F1 over all thresholds; from the maps and ground-truth masks
(when given) the pixel AUROC and the AUPRO (normal images count as all-zero masks). The metrics
are those of :mod:`anomgan.scoring.metrics` (scikit-learn's and MVTec AD's definitions).

Memory: images are read and scored ``batch_size`` at a time; without masks no map is kept. With
masks the maps of the images that enter the pixel metrics are kept (float32, or float16 once
they exceed :data:`MAX_FLOAT32_PIXELS` pixels in all, which can only add ties) with the masks as
bool, since the exact pixel metrics need every pixel.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["evaluate", "summary", "MAX_FLOAT32_PIXELS", "AUPRO_MAX_FPR"]

#: maps are kept as float32 up to this many pixels in all, as float16 beyond (see the module doc)
MAX_FLOAT32_PIXELS = 1 << 26
#: the false-positive-rate limit of the AUPRO (MVTec AD's 0.3)
AUPRO_MAX_FPR = 0.3
DEFAULT_BATCH_SIZE = 16
HARDEST_K = 8  # images per row of evaluate's hardest-cases picture


# ------------------------------------------------------------------------------ image sources
class _Source:
    """Images given as a folder, a path, a list (paths, PIL images, arrays) or an array / tensor:
    their names (paths when files), and a generator of single (1, C, H, W) images."""

    def __init__(self, x, what: str, channels: int):
        from .data import to_batch
        from .data.folder import IMAGE_EXTENSIONS, list_images

        self.what, self.channels, self.root, self.tensor = what, channels, None, None
        if isinstance(x, (str, os.PathLike)):
            p = os.fspath(x)
            if os.path.isdir(p):
                self.root = p
                self.items = list_images(p, recursive=True)
                if not self.items:
                    raise ValueError(f"evaluate: {what} {p}: no image files "
                                     f"({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            elif os.path.isfile(p):
                self.items = [p]
            else:
                raise FileNotFoundError(f"evaluate: {what} {p}: no such file or folder")
        elif isinstance(x, (list, tuple)):
            self.items = [os.fspath(i) if isinstance(i, os.PathLike) else i for i in x]
        elif isinstance(x, (np.ndarray, torch.Tensor)):
            self.tensor = to_batch(x, channels=channels)
            self.items = list(range(self.tensor.shape[0]))
        else:
            raise TypeError(f"evaluate: {what} must be a folder, a path, a list of images or an "
                            f"array / tensor, got {type(x).__name__}")
        if not self.items:
            raise ValueError(f"evaluate: no {what} images given")
        self.names = [i if isinstance(i, str) else f"{what}[{k}]" for k, i in enumerate(self.items)]
        self.paths = all(isinstance(i, str) for i in self.items) and self.tensor is None

    def __len__(self) -> int:
        return len(self.items)

    def image_at(self, k: int) -> torch.Tensor:
        """Image ``k`` as a (1, C, H, W) float tensor."""
        from .data import to_batch

        return self.tensor[k:k + 1] if self.tensor is not None else to_batch([self.items[k]], channels=self.channels)

    def images(self) -> Iterator[torch.Tensor]:
        for k in range(len(self.items)):
            yield self.image_at(k)


def _batches(source: _Source, size: int) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(indices, (B, C, H, W)) runs of at most ``size`` consecutive images of one size."""
    idx: list[int] = []
    buf: list[torch.Tensor] = []
    for k, x in enumerate(source.images()):
        if buf and (len(buf) == size or x.shape[-2:] != buf[0].shape[-2:]):
            yield idx, torch.cat(buf)
            idx, buf = [], []
        idx.append(k)
        buf.append(x)
    if buf:
        yield idx, torch.cat(buf)


# ------------------------------------------------------------------------------------ masks
def _mask_key(path: str, root: str | None) -> tuple[str, str]:
    """(relative key without extension, stem), the ``_mask`` suffix removed from both."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem.endswith("_mask"):
        stem = stem[:-len("_mask")]
    rel = os.path.relpath(path, root) if root else os.path.basename(path)
    rel = os.path.join(os.path.dirname(rel), stem)
    return rel, stem


def _match_masks(masks, anomalous: _Source) -> list:
    """One mask source (path, PIL image, array or None) per anomalous image."""
    from .data.folder import list_images

    if isinstance(masks, (str, os.PathLike)):
        folder = os.fspath(masks)
        if not os.path.isdir(folder):
            what = "not a folder" if os.path.exists(folder) else "no such folder"
            raise ValueError(f"evaluate: masks {folder}: {what} (give a folder of masks named like "
                             "the anomalous images, or a list of masks in their order)")
        if not anomalous.paths:
            raise ValueError("evaluate: masks given as a folder are matched to the anomalous images by "
                             "file name, but the anomalous images are not files; give masks as a list "
                             "in their order")
        by_rel: dict[str, str] = {}
        by_stem: dict[str, list[str]] = {}
        for p in list_images(folder, recursive=True):
            rel, stem = _mask_key(p, folder)
            if rel not in by_rel or os.path.splitext(p)[0].endswith("_mask"):
                by_rel[rel] = p
            by_stem.setdefault(stem, []).append(p)
        out, unmatched = [], []
        for p in anomalous.items:
            rel, stem = _mask_key(p, anomalous.root)
            m = by_rel.get(rel)
            if m is None:
                cands = by_stem.get(stem, [])
                if len(cands) > 1 and len({_mask_key(c, folder)[0] for c in cands}) > 1:
                    raise ValueError(f"evaluate: masks {folder}: {len(cands)} masks are named like the "
                                     f"anomalous image {p} ({cands[0]}, {cands[1]}, ...); keep the "
                                     "anomalous images' sub-folders in the mask folder")
                m = cands[0] if cands else None
            if m is None:
                unmatched.append(p)
            out.append(m)
        if len(unmatched) == len(out):
            raise ValueError(f"evaluate: masks {folder}: no mask is named like an anomalous image "
                             f"(expected e.g. {_mask_key(anomalous.items[0], None)[1]}_mask.png or "
                             f"{_mask_key(anomalous.items[0], None)[1]}.png)")
        if unmatched:
            warnings.warn(f"evaluate: {len(unmatched)} of {len(out)} anomalous images have no mask in "
                          f"{folder} (first: {unmatched[0]}); they are left out of the pixel metrics",
                          UserWarning, stacklevel=4)
        return out
    if isinstance(masks, (np.ndarray, torch.Tensor)):
        if masks.ndim == 2:
            masks = masks[None]
        if masks.ndim != 3:
            raise ValueError(f"evaluate: masks as an array must be (N, H, W), got shape {tuple(masks.shape)}")
        masks = [masks[i] for i in range(masks.shape[0])]
    if not isinstance(masks, (list, tuple)):
        raise TypeError(f"evaluate: masks must be a folder, a list aligned with the anomalous images "
                        f"or an (N, H, W) array, got {type(masks).__name__}")
    if len(masks) != len(anomalous):
        raise ValueError(f"evaluate: {len(masks)} masks for {len(anomalous)} anomalous images; a list "
                         "of masks must hold one per anomalous image, in their order (None: no mask)")
    return [os.fspath(m) if isinstance(m, os.PathLike) else m for m in masks]


# -------------------------------------------------------------------------------- evaluate
def _resolve_detector(detector):
    """(Detector, model path or None): a detector file is loaded (cached); anything else than a
    Detector or a path raises TypeError."""
    from .api import _cached
    from .detector import Detector

    if isinstance(detector, (str, os.PathLike)):
        model = os.fspath(detector)
        return _cached(model), model
    if not isinstance(detector, Detector):
        raise TypeError(f"evaluate: detector must be a Detector or a path, got {type(detector).__name__}")
    return detector, None


def _check_options(batch_size, out, plot, hardest=None) -> int:
    """The batch size (default :data:`DEFAULT_BATCH_SIZE`); ValueError for a batch size that is not
    an int >= 1, an ``out`` not named .json or a ``plot`` / ``hardest`` not named .png."""
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be an int >= 1, got {batch_size!r}")
    for name, path, ext in (("out", out, ".json"), ("plot", plot, ".png"), ("hardest", hardest, ".png")):
        if path is not None and not os.fspath(path).lower().endswith(ext):
            raise ValueError(f"evaluate: {name}={os.fspath(path)!r}: give a {ext} file name")
    return batch_size


def _from_mvtec(mvtec, notes: list[str]):
    """(normal paths, anomalous paths, masks or None, defect type per anomalous image) of an
    MVTec-AD-style root's test split; a note is added for defect types without masks. ValueError
    when test/good or the defect folders hold no image."""
    from .data.mvtec import read_mvtec

    ds = read_mvtec(mvtec, train=False, test=True)
    root = os.fspath(mvtec)
    normal = [e.path for e in ds.test_normal]
    anom = ds.test_anomalous
    if not normal:
        raise ValueError(f"evaluate: {root}: test/good holds no images; the evaluation needs "
                         "normal test images")
    if not anom:
        raise ValueError(f"evaluate: {root}: no anomalous images: test/ has no defect "
                         "sub-folder with images (test/<defect>/*)")
    masks = None
    if ds.has_masks:
        masks = [e.mask for e in anom]
        bare = sorted({e.defect for e in anom if e.mask is None})
        if bare:
            notes.append(f"defect types without masks, left out of the pixel metrics: {', '.join(bare)}")
    return normal, [e.path for e in anom], masks, [e.defect for e in anom]


def _resolve_sources(detector, normal, anomalous, masks, mvtec, notes: list[str]):
    """(normal _Source, anomalous _Source, one mask source per anomalous image or None, defect
    types or None) from either ``mvtec`` or ``normal`` / ``anomalous`` / ``masks``; ValueError when
    both kinds or not both classes are given."""
    defects = None
    if mvtec is not None:
        if normal is not None or anomalous is not None or masks is not None:
            raise ValueError("evaluate: give mvtec=ROOT, or normal= and anomalous= (with masks=), not both")
        normal, anomalous, masks, defects = _from_mvtec(mvtec, notes)
    if normal is None or anomalous is None:
        raise ValueError("evaluate: give normal= and anomalous= images (or mvtec=ROOT); the metrics "
                         "need both normal and anomalous images")
    norm = _Source(normal, "normal", detector.channels)
    anom_src = _Source(anomalous, "anomalous", detector.channels)
    mask_items = None if masks is None else _match_masks(masks, anom_src)
    return norm, anom_src, mask_items, defects


class _PixelStore:
    """The maps and ground-truth masks kept for the pixel metrics: maps as float32 until they
    exceed :data:`MAX_FLOAT32_PIXELS` pixels in all, then (all of them) as float16."""

    def __init__(self):
        self.maps: list[np.ndarray] = []
        self.gts: list[np.ndarray] = []
        self.pixels = 0
        self.dtype = np.float32

    def keep(self, m: torch.Tensor, gt: np.ndarray) -> None:
        a = m.numpy()
        self.pixels += a.size
        if self.dtype is np.float32 and self.pixels > MAX_FLOAT32_PIXELS:
            self.dtype = np.float16
            self.maps[:] = [x.astype(np.float16) for x in self.maps]
        self.maps.append(a.astype(self.dtype, copy=True))
        self.gts.append(gt)

    def clear(self) -> None:
        self.maps.clear()
        self.gts.clear()


def _keep_maps(store: _PixelStore, r, label: int, idx: list[int], names: list[str], mask_items) -> None:
    """Keep the maps of one scored batch with their masks (all-False for normal images; anomalous
    images without a mask are skipped); ValueError for a non-finite map or a mask that does not
    fit its image."""
    from .data.mvtec import read_mask

    for j, k in enumerate(idx):
        m = r.maps[j]
        if not bool(torch.isfinite(m).all()):
            raise ValueError(f"evaluate: the anomaly map of {names[j]} holds NaN or "
                             "infinite values")
        H, W = m.shape
        if label == 0:
            store.keep(m, np.broadcast_to(np.False_, (H, W)))
        elif mask_items[k] is not None:
            src_mask = mask_items[k]
            mname = src_mask if isinstance(src_mask, str) else f"masks[{k}]"
            store.keep(m, read_mask(src_mask, (H, W), name=f"mask {mname}",
                                    image=f"its image {names[j]}"))


def _score_all(detector, norm: _Source, anom_src: _Source, mask_items, with_pixels: bool,
               batch_size: int, backend, progress: bool):
    """Score the normal then the anomalous images ``batch_size`` at a time: (scores, predicted
    labels, _PixelStore — filled only ``with_pixels``); ValueError for a non-finite score."""
    scores: list[float] = []
    predicted: list[bool] = []
    store = _PixelStore()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(norm) + len(anom_src), desc="evaluate", unit="image")
    try:
        for label, src in ((0, norm), (1, anom_src)):
            for idx, x in _batches(src, batch_size):
                names = [src.names[k] for k in idx]
                r = detector.detect(x, backend=backend, names=names)
                bad = r.invalid
                if bool(bad.any()):
                    i = int(bad.nonzero()[0])
                    raise ValueError(f"evaluate: the score of {names[i]} is not finite "
                                     f"({float(r.scores[i])}); the detector or the image is broken")
                scores += [float(s) for s in r.scores.tolist()]
                predicted += [bool(v) for v in r.labels.tolist()]
                if with_pixels:
                    _keep_maps(store, r, label, idx, names, mask_items)
                if bar is not None:
                    bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()
    return scores, predicted, store


def _image_metrics(detector, model, y: np.ndarray, s: np.ndarray, predicted: list[bool],
                   masked: int, notes: list[str]) -> dict[str, Any]:
    """The result dict with the image metrics filled in (the pixel metrics None): AUROC, AUPR,
    best F1 and, when the detector has a threshold, precision / recall / F1 / confusion at it
    (else a note)."""
    from .scoring import metrics as M

    thr = detector.threshold.value if detector.threshold is not None else None
    best_f1, best_thr = M.f1_max(y, s)
    auroc, lo, hi = M.roc_auc_ci(y, s, 0.95)
    res: dict[str, Any] = {
        "model": model,
        "method": detector.method_name,
        "input_mode": detector.input_mode,
        "normal_images": int(np.sum(y == 0)),
        "anomalous_images": int(np.sum(y == 1)),
        "masked_images": masked,
        "image_auroc": auroc,
        "image_auroc_ci95": [lo, hi],
        "image_aupr": M.average_precision(y, s),
        "threshold": None if thr is None else float(thr),
        "precision": None, "recall": None, "f1": None, "confusion": None,
        "best_f1": best_f1,
        "best_f1_threshold": best_thr,
        "pixel_auroc": None,
        "aupro": None,
        "aupro_max_fpr": AUPRO_MAX_FPR,
    }
    if thr is None:
        notes.append("the detector has no threshold: precision, recall and F1 at the threshold are "
                     "not computed (calibrate it; best_f1 is the best any threshold reaches)")
    else:
        p = np.asarray(predicted, dtype=bool)
        prec, rec, f1 = M.precision_recall_f1(y, p)
        res.update(precision=prec, recall=rec, f1=f1, confusion={
            "tp": int(np.sum(p & (y == 1))), "fp": int(np.sum(p & (y == 0))),
            "tn": int(np.sum(~p & (y == 0))), "fn": int(np.sum(~p & (y == 1)))})
    return res


def _pixel_metrics(res: dict[str, Any], store: _PixelStore, with_pixels: bool,
                   notes: list[str]) -> None:
    """Fill ``res``'s pixel AUROC and AUPRO from the kept maps and masks (or add a note why not)."""
    from .scoring import metrics as M

    if not with_pixels:
        notes.append("no masks: pixel AUROC and AUPRO are not computed")
        return
    left_out = res["anomalous_images"] - res["masked_images"]
    if left_out:
        notes.append(f"{left_out} anomalous images without a mask are left out of the pixel metrics")
    if not any(g.any() for g in store.gts):
        notes.append("the masks hold no defect pixel: pixel metrics are not computed")
        return
    res["pixel_auroc"] = M.pixel_auroc(store.maps, store.gts)
    res["aupro"] = M.aupro(store.maps, store.gts, max_fpr=AUPRO_MAX_FPR)
    if store.dtype is np.float16:
        notes.append(f"maps held as float16 ({store.pixels} pixels) for the pixel metrics")


def _per_defect(s: np.ndarray, n_norm: int, defects: list[str]) -> dict[str, Any]:
    """{defect type: {images, image_auroc}}: each type's anomalous images against all normal ones."""
    from .scoring import metrics as M

    per: dict[str, Any] = {}
    normal_scores = s[:n_norm]
    for d in sorted(set(defects)):
        ds_scores = s[n_norm:][np.asarray(defects) == d]
        yy = np.array([0] * n_norm + [1] * len(ds_scores))
        per[d] = {"images": int(len(ds_scores)),
                  "image_auroc": M.roc_auc(yy, np.concatenate([normal_scores, ds_scores]))}
    return per


def _write_outputs(res: dict[str, Any], out, plot, y: np.ndarray, s: np.ndarray, thr, detector) -> None:
    """Write ``res`` as JSON to ``out`` (atomically) and the ROC / PR curves to ``plot`` (each when
    not None)."""
    if out is not None:
        import json

        from .fileio import atomic_write_text

        atomic_write_text(out, json.dumps(res, indent=2) + "\n")
    if plot is not None:
        from .apps.curves import write_curves_png

        model = res["model"]
        write_curves_png(plot, y, s, threshold=thr, auroc=res["image_auroc"],
                         aupr=res["image_aupr"],
                         title=os.path.basename(model) if model else detector.method_name)


def evaluate(detector, normal=None, anomalous=None, *, masks=None, mvtec=None,
             batch_size: int | None = None, out=None, plot=None, backend: str | None = None,
             progress: bool = False, compare=None, hardest=None) -> dict[str, Any]:
    """Measure ``detector`` on labelled images; returns a JSON-able dict of metrics.

    detector  : a :class:`anomgan.Detector` or the path of a detector file.
    normal    : defect-free images; anomalous: defective ones. Each a folder (its image files,
                sub-folders included, sorted), a path, a list of paths / PIL images / arrays,
                or an array / tensor as ``detect`` takes it.
    masks     : ground-truth defect masks of the anomalous images (pixel > 0 = defect): a
                folder (each mask named like its image: ``<stem>_mask.png`` or ``<stem>.png``,
                in the same sub-folders), a list in the order of the anomalous images (paths,
                PIL images or 2-D arrays; None for an image without one), or an (N, H, W)
                array. A mask must have its image's size or aspect ratio (then resized,
                nearest). Anomalous images without a mask are left out of the pixel metrics.
    mvtec     : instead of normal / anomalous / masks, an MVTec-AD-style root (see
                :mod:`anomgan.data.mvtec`): ``test/good`` is normal, ``test/<defect>``
                anomalous with ``ground_truth/<defect>`` masks; adds per-defect-type AUROCs.
    batch_size: images scored per call (default 16).
    out       : write the metrics as JSON to this file (atomically).
    plot      : write one PNG with the ROC and the precision-recall curves side by side.
    backend   : kernel backend for ``detect``; progress: a progress bar.
    compare   : another detector (or its file) to score the same images with: the result then
                holds ``comparison`` = {model, method, image_auroc (its), difference (this
                detector's AUROC minus its), ci95, p_value}: DeLong's paired test,
                :func:`anomgan.scoring.metrics.roc_auc_difference` (None, with a note, when a
                class has fewer than 2 images).
    hardest   : write one PNG of the hardest cases (:mod:`anomgan.apps.hardest`): the
                :data:`HARDEST_K` lowest-scored anomalous and highest-scored normal images, each
                with its map, score and name; the result then holds ``hardest`` =
                {"missed": [...], "false_alarms": [...]}, each a list of {name, score}.

    The dict holds: normal_images, anomalous_images, masked_images; image_auroc,
    image_auroc_ci95 ([lower, upper]: its 95 % confidence interval,
    :func:`anomgan.scoring.metrics.roc_auc_ci`), image_aupr; threshold (None when the detector
    has none), precision, recall, f1 and confusion (tp/fp/tn/fn) at it (None then, with a
    note); best_f1 and best_f1_threshold; pixel_auroc and aupro (None without masks);
    per_defect (``mvtec`` only: {type: {images, image_auroc}}); notes. Raises ValueError when
    a class is missing, a score or map is not finite, or a mask does not fit its image."""
    detector, model = _resolve_detector(detector)
    other = None
    if compare is not None:  # before scoring: a bad argument fails at once
        try:
            other = _resolve_detector(compare)
        except TypeError as exc:
            raise TypeError(f"evaluate: compare: {exc}") from None
    batch_size = _check_options(batch_size, out, plot, hardest)
    notes: list[str] = []
    norm, anom_src, mask_items, defects = _resolve_sources(detector, normal, anomalous, masks,
                                                           mvtec, notes)
    with_pixels = mask_items is not None and any(m is not None for m in mask_items)
    scores, predicted, store = _score_all(detector, norm, anom_src, mask_items, with_pixels,
                                          batch_size, backend, progress)

    n_norm, n_anom = len(norm), len(anom_src)
    y = np.array([0] * n_norm + [1] * n_anom)
    s = np.asarray(scores, dtype=np.float64)
    masked = sum(m is not None for m in mask_items) if with_pixels else 0
    res = _image_metrics(detector, model, y, s, predicted, masked, notes)
    _pixel_metrics(res, store, with_pixels, notes)
    store.clear()  # free the maps before the per-defect scores and the plot
    if defects is not None:
        res["per_defect"] = _per_defect(s, n_norm, defects)
    if other is not None:
        res["comparison"] = _compare(other, norm, anom_src, y, s, batch_size, backend, progress, notes)
    res["notes"] = notes
    thr = detector.threshold.value if detector.threshold is not None else None
    if hardest is not None:
        res["hardest"] = _write_hardest(hardest, detector, norm, anom_src, s, thr, backend)
    _write_outputs(res, out, plot, y, s, thr, detector)
    return res


def _write_hardest(path, detector, norm: _Source, anom_src: _Source, s: np.ndarray, thr,
                   backend) -> dict[str, list]:
    """``evaluate``'s hardest-cases PNG; returns their names and scores per row."""
    from .apps.hardest import write_hardest_png

    n_norm = len(norm)
    missed = np.argsort(s[n_norm:], kind="stable")[:HARDEST_K]
    alarms = np.argsort(-s[:n_norm], kind="stable")[:HARDEST_K]
    rows, listed = [], {}
    for key, heading, source, idx, offset in (
            ("missed", "lowest-scored anomalous images (missed first)", anom_src, missed, n_norm),
            ("false_alarms", "highest-scored normal images (false alarms first)", norm, alarms, 0)):
        cases = []
        for k in idx.tolist():
            x = source.image_at(k)
            amap = detector.detect(x, backend=backend).maps[0]
            cases.append({"image": x[0], "map": amap, "score": float(s[offset + k]),
                          "name": source.names[k], "anomalous": offset > 0})
        rows.append((heading, cases))
        listed[key] = [{"name": c["name"], "score": c["score"]} for c in cases]
    write_hardest_png(path, rows, thr)
    return listed


def _compare(other: tuple, norm: _Source, anom_src: _Source, y: np.ndarray, s: np.ndarray,
             batch_size: int, backend, progress: bool, notes: list[str]) -> dict[str, Any] | None:
    """``evaluate``'s ``comparison``: ``other`` = (detector, its file or None) scores the same
    images; DeLong's paired test of the two AUROCs (see :func:`evaluate`)."""
    from .scoring import metrics as M

    second, second_model = other
    n_anom = int(y.sum())
    if min(n_anom, y.size - n_anom) < 2:
        notes.append("compare: the paired test needs at least 2 normal and 2 anomalous images; "
                     "no comparison")
        return None
    s_second = np.asarray(_score_all(second, norm, anom_src, None, False, batch_size, backend,
                                     progress)[0], dtype=np.float64)
    d = M.roc_auc_difference(y, s, s_second)
    return {"model": second_model, "method": second.method_name, "image_auroc": d["auroc_b"],
            "difference": d["difference"], "ci95": [d["lower"], d["upper"]], "p_value": d["p_value"]}


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _ci(bounds) -> str:
    """" (95 % CI lo-hi)", or "" for a metrics file written before the interval existed."""
    return "" if not bounds else f" (95 % CI {bounds[0]:.3f}-{bounds[1]:.3f})"


def summary(metrics: dict[str, Any]) -> str:
    """A few human-readable lines of an :func:`evaluate` result (what ``anomgan evaluate`` prints)."""
    m = metrics
    lines = [f"{m['normal_images']} normal and {m['anomalous_images']} anomalous images"
             + (f" ({m['masked_images']} with masks)" if m.get("masked_images") else ""),
             f"image AUROC {_f(m['image_auroc'])}{_ci(m.get('image_auroc_ci95'))}   "
             f"AUPR {_f(m['image_aupr'])}"]
    if m.get("threshold") is None:
        lines.append("no threshold in the detector: no precision / recall / F1 at the threshold")
    else:
        c = m["confusion"]
        lines.append(f"at threshold {m['threshold']:.6g}: precision {_f(m['precision'])}   recall "
                     f"{_f(m['recall'])}   F1 {_f(m['f1'])}   (TP {c['tp']}, FP {c['fp']}, "
                     f"FN {c['fn']}, TN {c['tn']})")
    lines.append(f"best F1 {_f(m['best_f1'])} at threshold {m['best_f1_threshold']:.6g}")
    if m.get("pixel_auroc") is not None:
        lines.append(f"pixel AUROC {_f(m['pixel_auroc'])}   AUPRO {_f(m['aupro'])} "
                     f"(FPR <= {m.get('aupro_max_fpr', AUPRO_MAX_FPR)})")
    c = m.get("comparison")
    if c:
        lines.append(f"against {c['model'] or c['method']} (image AUROC {_f(c['image_auroc'])}): "
                     f"difference {c['difference']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}], "
                     f"p = {c['p_value']:.3f} (DeLong, paired on these images)")
    per = m.get("per_defect")
    if per:
        lines.append("image AUROC per defect type: " + ", ".join(
            f"{d} {_f(v['image_auroc'])} ({v['images']})" for d, v in per.items()))
    return "\n".join(lines)
