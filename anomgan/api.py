"""The public surface: train, load, detect."""
from __future__ import annotations

import os
import threading
from typing import Any

import torch

from .detector import Detector
from .result import DetectionResult

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
