"""The hardest cases of an evaluation as one PNG, drawn with Pillow only.

Two rows of up to ``k`` cells: the lowest-scored anomalous images (the defects a threshold
misses first) and the highest-scored normal images (the first false alarms), each drawn with its
anomaly map blended on top (one map scale for the whole picture: the largest 99th percentile of
the shown maps), its score and name underneath; a caption in red marks an image its detector's
threshold gets wrong. Looking at these is usually the fastest way to see what a detector does
not understand about the parts (a kind of defect it misses, a kind of normal it flags).
"""
from __future__ import annotations

import os
from typing import Sequence

import torch

__all__ = ["render_hardest", "write_hardest_png", "CELL"]

CELL = 176                      # side of one picture, pixels (the longer side of the image)
_PAD, _CAPTION, _HEADING = 10, 34, 30
_INK, _RED, _GREY = (30, 30, 30), (214, 39, 40), (120, 120, 120)


def _cell(image: torch.Tensor, amap: torch.Tensor, vmax: float):
    from PIL import Image

    from .report import overlay

    rgb = Image.fromarray(overlay(image, amap, vmax))
    w, h = rgb.size
    f = CELL / max(w, h)
    return rgb.resize((max(1, round(w * f)), max(1, round(h * f))),
                      Image.NEAREST if f >= 1 else Image.BILINEAR)


def render_hardest(rows: Sequence[tuple[str, Sequence[dict]]], threshold: float | None = None):
    """A PIL image: one row per ``(heading, cases)``; a case is ``{"image": (C, H, W) float in
    [0, 1], "map": (H, W), "score": float, "name": str, "anomalous": bool}``."""
    from PIL import Image, ImageDraw

    from .curves import _font, _text_size

    maps = [c["map"].detach().float().cpu().flatten() for _, cases in rows for c in cases]
    # torch.quantile takes at most 16 M values: a strided sample of at most ~1 M per map
    vmax = max([float(torch.quantile(m[::max(1, m.numel() // 1_000_000)], 0.99)) for m in maps] + [1e-12])
    k = max([len(cases) for _, cases in rows] + [1])
    width = _PAD + k * (CELL + _PAD)
    height = sum(_HEADING + CELL + _CAPTION for _ in rows) + _PAD
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    big, small = _font(16), _font(12)
    y = 0
    for heading, cases in rows:
        draw.text((_PAD, y + 7), heading if cases else f"{heading}: none", fill=_INK, font=big)
        y += _HEADING
        for j, c in enumerate(cases):
            x = _PAD + j * (CELL + _PAD)
            img.paste(_cell(c["image"], c["map"], vmax), (x, y))
            wrong = threshold is not None and ((c["score"] >= threshold) != bool(c["anomalous"]))
            draw.text((x, y + CELL + 3), f"score {c['score']:.4g}", fill=_RED if wrong else _INK, font=small)
            name = os.path.basename(c["name"])
            while name and _text_size(draw, name, small)[0] > CELL:
                name = name[:-2] + "…" if len(name) > 2 else ""
            draw.text((x, y + CELL + 18), name, fill=_GREY, font=small)
        y += CELL + _CAPTION
    return img


def write_hardest_png(path, rows, threshold: float | None = None) -> None:
    """:func:`render_hardest` written to ``path`` as a PNG, atomically."""
    from ..fileio import atomic_path

    img = render_hardest(rows, threshold)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", optimize=True)
