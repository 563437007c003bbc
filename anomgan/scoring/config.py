"""ScoringConfig: how a detector scores, in one place (stored in the detector file).

The latent-search defaults: λ = 0.1 and the "mean" reduction are the constants of
:mod:`anomgan.scoring.search`, so the search and the detector can never disagree on them; the
step count is :data:`DEFAULT_SEARCH_STEPS`, not AnoGAN's 500 (:data:`ANOGAN_STEPS`, which the
benchmarks that reproduce published numbers pass explicitly): see its comment.

Detector files store every setting. A file written before a setting existed reads it as
:data:`LEGACY_DEFAULTS` says (what that file scored with), not as today's default:
:meth:`ScoringConfig.from_stored`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from .._validate import check_choice, check_int, check_known_settings, check_real
from .search import (ANOGAN_LAMBDA, ANOGAN_STEPS, DEFAULT_REDUCTION, REDUCTIONS,
                     cpu_has_native_bf16)

IMAGE_SCORES = ("native", "patch_topn")
#: ``map_norm``: "none", or "position" (per-pixel-position standardisation of the maps with
#: statistics of normal images: :mod:`anomgan.scoring.reference`)
MAP_NORMS = ("none", "position")
#: ``search_precision``: "auto" = bfloat16 on a CPU with native bfloat16 instructions
#: (:func:`anomgan.scoring.search.cpu_has_native_bf16`), float32 elsewhere (CUDA included)
SEARCH_PRECISIONS = ("auto", "float32", "bfloat16")

#: The detector's latent-search step count: 0, i.e. the AnoGAN loss at the izi_f encoder's E(x)
#: in one pass. Chosen on validation data only (benchmarks/accuracy/search_steps.py;
#: RESULTS_ACCURACY.md, "AUROC against latent-search steps") as the smallest count whose
#: validation AUROC, warm-started by the encoder, is within 0.3 points of 500 steps on protocols
#: 1 and 2: from E(x) the AUROC fell as the search got longer (0 steps: +2.4 and +4.6 points
#: over 500, on all 12 models), so no step is needed.
DEFAULT_SEARCH_STEPS = 0

#: the value a detector file that predates a setting scored with (see from_stored)
LEGACY_DEFAULTS = {"search_steps": ANOGAN_STEPS, "search_precision": "float32"}

#: upper limits of the int settings, far above any real use: they stop a detector file (or a
#: typo) from asking for an endless search or unbounded memory
MAXIMA = {"search_steps": 100_000, "search_restarts": 1_000, "patch": 4096, "stride": 4096,
          "n": 10_000, "batch_size": 65_536, "tile_overlap": 4096}


@dataclass
class ScoringConfig:
    """How a detector scores. Stored in the detector file.

    search_steps, search_lam, search_restarts, search_seed, search_reduction:
        latent search of the GAN methods (anogan, noisy-gan): Adam steps (AnoGAN's schedule,
        scaled to the step count; default :data:`DEFAULT_SEARCH_STEPS`; 0 = score the start
        itself, E(x) once the encoder has trained), λ of the feature-matching term, starts per
        image (restart 0 from the encoder when there is one), seed of the fixed extra starts,
        "mean" or "sum".
    search_precision: "auto" (default), "float32" or "bfloat16": the dtype G and f run in during
        the search steps (the score itself is always recomputed in float32 at the found z).
        "auto": bfloat16 on a CPU with native bfloat16 instructions, else float32.
    image_score: "native" (the method's own score at model size) or "patch_topn" (the
        patch top-n over the per-pixel map, as for tiled images).
    patch, stride, n: the patch top-n image score over maps (tiled images, "patch_topn"); see
        :func:`anomgan.scoring.patches.patch_grid` for how they meet a map's size.
    tile_overlap: pixels of overlap between tiles (None: a quarter of the tile).
    batch_size: images (or tiles) scored per network call.
    map_norm: "none" (default) or "position": maps become z = (r - mu) / (sigma + map_norm_floor)
        with per-pixel-position statistics of normal images (the detector's reference, fitted
        by ``train`` on the training normals; :mod:`anomgan.scoring.reference`), and the image
        score is the patch top-n of z (needs ``image_score="patch_topn"``). For parts imaged in
        one pose; images must then have the size of the normal ones.
    map_norm_floor: the floor added to sigma, in map units (default 0.01; > 0, <= 1).

    Limits (``MAXIMA``; ValueError beyond them, so a detector file cannot ask for an endless
    search or unbounded memory): search_steps <= 100_000, search_restarts <= 1_000,
    patch, stride, tile_overlap <= 4096, n <= 10_000, batch_size <= 65_536.
    """

    search_steps: int = DEFAULT_SEARCH_STEPS
    search_lam: float = ANOGAN_LAMBDA
    search_restarts: int = 1
    search_seed: int = 0
    search_reduction: str = DEFAULT_REDUCTION
    search_precision: str = "auto"
    image_score: str = "native"
    patch: int = 16
    stride: int = 8
    n: int = 3
    tile_overlap: int | None = None
    batch_size: int = 64
    map_norm: str = "none"
    map_norm_floor: float = 0.01

    def __post_init__(self):
        check_int("ScoringConfig", "search_steps", self.search_steps, minimum=0,
                  maximum=MAXIMA["search_steps"])
        for name in ("search_restarts", "patch", "stride", "n", "batch_size"):
            check_int("ScoringConfig", name, getattr(self, name), minimum=1, maximum=MAXIMA[name])
        check_int("ScoringConfig", "search_seed", self.search_seed)
        check_real("ScoringConfig", "search_lam", self.search_lam, 0.0, 1.0)
        check_choice("ScoringConfig", "search_reduction", self.search_reduction, REDUCTIONS)
        check_choice("ScoringConfig", "search_precision", self.search_precision, SEARCH_PRECISIONS)
        check_choice("ScoringConfig", "image_score", self.image_score, IMAGE_SCORES)
        check_int("ScoringConfig", "tile_overlap", self.tile_overlap, minimum=0,
                  maximum=MAXIMA["tile_overlap"], allow_none=True)
        check_choice("ScoringConfig", "map_norm", self.map_norm, MAP_NORMS)
        check_real("ScoringConfig", "map_norm_floor", self.map_norm_floor, 0.0, 1.0, lo_open=True)
        if self.map_norm != "none" and self.image_score != "patch_topn":
            raise ValueError(f"ScoringConfig: map_norm={self.map_norm!r} rescores the standardised "
                             f"maps, so it needs image_score='patch_topn', got {self.image_score!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScoringConfig":
        check_known_settings("ScoringConfig", d, (f.name for f in fields(cls)))
        return cls(**d)

    @classmethod
    def from_stored(cls, d: dict[str, Any]) -> "ScoringConfig":
        """The settings a detector file stored; a setting the file predates takes its
        :data:`LEGACY_DEFAULTS` value (what that file scored with), others today's default."""
        return cls.from_dict({**{k: v for k, v in LEGACY_DEFAULTS.items() if k not in d}, **d})

    def search_compute_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """The ``compute_dtype`` of :func:`anomgan.scoring.search.latent_search` for queries x
        (None: x's own dtype): ``search_precision`` resolved for x's device and dtype ("auto"
        and "bfloat16" apply to float32 queries only)."""
        if self.search_precision == "float32" or x.dtype != torch.float32:
            return None
        if self.search_precision == "bfloat16":
            return torch.bfloat16
        return torch.bfloat16 if x.device.type == "cpu" and cpu_has_native_bf16() else None
