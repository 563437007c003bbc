"""ScoringConfig: how a detector scores, in one place (stored in the detector file).

The latent-search defaults are the constants of :mod:`anomgan.scoring.search` (AnoGAN's 500
steps and λ = 0.1, the detector's "mean" reduction), so the search and the detector can never
disagree on them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .._validate import check_choice, check_int, check_real
from .search import ANOGAN_LAMBDA, ANOGAN_STEPS, DEFAULT_REDUCTION, REDUCTIONS

IMAGE_SCORES = ("native", "patch_topn")

#: upper limits of the int settings, far above any real use: they stop a detector file (or a
#: typo) from asking for an endless search or unbounded memory
MAXIMA = {"search_steps": 100_000, "search_restarts": 1_000, "patch": 4096, "stride": 4096,
          "n": 10_000, "batch_size": 65_536, "tile_overlap": 4096}


@dataclass
class ScoringConfig:
    """How a detector scores. Stored in the detector file.

    search_steps, search_lam, search_restarts, search_seed, search_reduction:
        latent search of the GAN methods (anogan, noisy-gan): Adam steps (AnoGAN's schedule,
        scaled to the step count), λ of the feature-matching term, starts per image (restart 0
        from the encoder when there is one), seed of the fixed extra starts, "mean" or "sum".
    image_score: "native" (the method's own score at model size) or "patch_topn" (the
        patch top-n over the per-pixel map, as for tiled images).
    patch, stride, n: the patch top-n image score over maps (tiled images, "patch_topn"); see
        :func:`anomgan.scoring.patches.patch_grid` for how they meet a map's size.
    tile_overlap: pixels of overlap between tiles (None: a quarter of the tile).
    batch_size: images (or tiles) scored per network call.

    Limits (``MAXIMA``; ValueError beyond them, so a detector file cannot ask for an endless
    search or unbounded memory): search_steps <= 100_000, search_restarts <= 1_000,
    patch, stride, tile_overlap <= 4096, n <= 10_000, batch_size <= 65_536.
    """

    search_steps: int = ANOGAN_STEPS
    search_lam: float = ANOGAN_LAMBDA
    search_restarts: int = 1
    search_seed: int = 0
    search_reduction: str = DEFAULT_REDUCTION
    image_score: str = "native"
    patch: int = 16
    stride: int = 8
    n: int = 3
    tile_overlap: int | None = None
    batch_size: int = 64

    def __post_init__(self):
        for name in ("search_steps", "search_restarts", "patch", "stride", "n", "batch_size"):
            check_int("ScoringConfig", name, getattr(self, name), minimum=1, maximum=MAXIMA[name])
        check_int("ScoringConfig", "search_seed", self.search_seed)
        check_real("ScoringConfig", "search_lam", self.search_lam, 0.0, 1.0)
        check_choice("ScoringConfig", "search_reduction", self.search_reduction, REDUCTIONS)
        check_choice("ScoringConfig", "image_score", self.image_score, IMAGE_SCORES)
        check_int("ScoringConfig", "tile_overlap", self.tile_overlap, minimum=0,
                  maximum=MAXIMA["tile_overlap"], allow_none=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScoringConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ScoringConfig: unknown setting(s) {unknown}; known: {sorted(known)}")
        return cls(**d)
