"""What `anomgan.detect` returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: the note of an image whose score is NaN or infinite (see :class:`DetectionResult`)
NON_FINITE_NOTE = "non-finite score"


@dataclass
class DetectionResult:
    """Scores and per-pixel maps of one detected batch.

    scores    (B,) float32: the image anomaly score (higher = more anomalous); it depends only
              on the image, never on the rest of the batch.
    maps      (B, H, W) float32 at the input resolution: the per-pixel residual (mean over
              channels of |x - reconstruction|, image units in [0, 1]).
    labels    (B,) bool: scores >= threshold (all False when the detector has no threshold),
              except that an image whose score is not finite (NaN or ±inf: broken weights or
              input) is always labelled anomalous (True), with or without a threshold: a
              score that cannot be compared never counts as ok.
    threshold the calibrated threshold, or None.
    names     optional per-image names (file paths when the batch came from files).
    notes     per-image notes, "" normally and ``"non-finite score"`` for an image whose score
              is not finite; None (the default) derives them from ``scores``.
    """

    scores: torch.Tensor
    maps: torch.Tensor
    labels: torch.Tensor
    threshold: float | None
    names: list[str] | None = field(default=None)
    notes: list[str] | None = field(default=None)

    def __post_init__(self):
        if self.notes is None:
            self.notes = [NON_FINITE_NOTE if bad else "" for bad in self.invalid.tolist()]
        elif len(self.notes) != len(self):
            raise ValueError(f"DetectionResult: {len(self.notes)} notes for {len(self)} images")

    @property
    def invalid(self) -> torch.Tensor:
        """(B,) bool: the images whose score is not finite (labelled anomalous, see above)."""
        return ~torch.isfinite(torch.as_tensor(self.scores))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_records(self) -> list[dict]:
        """One dict per image (name, score, anomalous, note): the rows of a scores CSV/JSON;
        note is "" normally and "non-finite score" for an image whose score is not finite."""
        names = self.names or [f"image_{i}" for i in range(len(self))]
        return [{"name": n, "score": float(s), "anomalous": bool(lab), "note": note}
                for n, s, lab, note in zip(names, self.scores.tolist(), self.labels.tolist(),
                                           self.notes)]
