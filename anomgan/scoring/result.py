"""What `anomgan.detect` returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DetectionResult:
    """Scores and per-pixel maps of one detected batch.

    scores    (B,) float32: the image anomaly score (higher = more anomalous); it depends only
              on the image, never on the rest of the batch.
    maps      (B, H, W) float32 at the input resolution: the per-pixel residual (mean over
              channels of |x - reconstruction|, image units in [0, 1]).
    labels    (B,) bool: scores >= threshold (all False when the detector has no threshold).
    threshold the calibrated threshold, or None.
    names     optional per-image names (file paths when the batch came from files).
    """

    scores: torch.Tensor
    maps: torch.Tensor
    labels: torch.Tensor
    threshold: float | None
    names: list[str] | None = field(default=None)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_records(self) -> list[dict]:
        """One dict per image (name, score, anomalous): the rows of a scores CSV/JSON."""
        names = self.names or [f"image_{i}" for i in range(len(self))]
        return [{"name": n, "score": float(s), "anomalous": bool(lab)}
                for n, s, lab in zip(names, self.scores.tolist(), self.labels.tolist())]
