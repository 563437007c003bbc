"""A self-contained HTML inspection report: every image with its heat-map overlay, score and
verdict, sorted by score, the score histogram with the threshold, and the detector's settings.

Images are inlined as base64 PNGs (one file to mail or archive); large images are shown
downscaled to at most ``max_side`` pixels (the map is computed at full resolution).
"""
from __future__ import annotations

import base64
import html
import io
import math
from typing import Any, Sequence

import numpy as np
import torch

from ..fileio import atomic_write_text
from ..scoring.result import DetectionResult

# A perceptual dark-blue -> yellow ramp (sampled from viridis-like anchors), 256 entries.
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                    dtype=np.float64)


def _colormap(v: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8."""
    pos = np.clip(v, 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac
    return rgb.round().astype(np.uint8)


def overlay(image: torch.Tensor, amap: torch.Tensor, vmax: float, alpha: float = 0.55) -> np.ndarray:
    """(C, H, W) image in [0, 1] and (H, W) map -> (H, W, 3) uint8: the image in gray/colour with
    the map blended on top where it is high (transparent where the map is ~0)."""
    img = image.detach().float().cpu().clamp(0, 1)
    img = img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]
    base = img.permute(1, 2, 0).numpy() * 255.0
    m = (amap.detach().float().cpu().numpy() / max(vmax, 1e-12)).clip(0, 1)
    heat = _colormap(m).astype(np.float64)
    a = (alpha * np.sqrt(m))[..., None]
    return (base * (1 - a) + heat * a).round().clip(0, 255).astype(np.uint8)


ZOOM = 128  # side, in input pixels, of the close-up shown beside large images


def hottest_crop(rgb: np.ndarray, amap: torch.Tensor, side: int) -> tuple[tuple[int, int], np.ndarray]:
    """((y0, x0), crop) — the side×side window of ``rgb`` centred on the map's maximum."""
    H, W = rgb.shape[:2]
    flat = int(torch.nan_to_num(amap.detach().float().cpu(), nan=-1.0).argmax())
    cy, cx = divmod(flat, W)
    y0 = min(max(cy - side // 2, 0), max(H - side, 0))
    x0 = min(max(cx - side // 2, 0), max(W - side, 0))
    return (y0, x0), rgb[y0:y0 + side, x0:x0 + side]


def _png_data_uri(rgb: np.ndarray, max_side: int) -> str:
    from PIL import Image

    im = Image.fromarray(rgb)
    if max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))),
                       Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def histogram_svg(scores: Sequence[float], threshold: float | None, bins: int = 30,
                  width: int = 640, height: int = 200) -> str:
    """An inline SVG histogram of the scores with the threshold as a red vertical line."""
    s = np.asarray([v for v in scores if math.isfinite(v)], dtype=np.float64)
    pad = 30
    if s.size == 0:
        return f'<svg width="{width}" height="{height}"><text x="10" y="20">no finite scores</text></svg>'
    lo, hi = float(s.min()), float(s.max())
    if threshold is not None and math.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi <= lo:
        hi = lo + 1.0
    counts, edges = np.histogram(s, bins=bins, range=(lo, hi))
    cmax = max(1, int(counts.max()))
    bw = (width - 2 * pad) / bins
    parts = [f'<svg class="histogram" width="{width}" height="{height}" role="img" '
             f'aria-label="score histogram">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#444"/>']
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * c / cmax
        parts.append(f'<rect x="{pad + i * bw:.1f}" y="{height - pad - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                     f'height="{h:.1f}" fill="#3b528b"><title>{edges[i]:.4g}–{edges[i + 1]:.4g}: {c}</title></rect>')
    for v in (lo, hi):
        x = pad + (v - lo) / (hi - lo) * (width - 2 * pad)
        parts.append(f'<text x="{x:.1f}" y="{height - 10}" font-size="11" text-anchor="middle">{v:.4g}</text>')
    if threshold is not None and math.isfinite(threshold):
        x = pad + (threshold - lo) / (hi - lo) * (width - 2 * pad)
        parts.append(f'<line class="threshold" x1="{x:.1f}" y1="{pad / 2}" x2="{x:.1f}" y2="{height - pad}" '
                     f'stroke="#d62728" stroke-width="2"/><text x="{x + 4:.1f}" y="{pad / 2 + 10}" '
                     f'font-size="11" fill="#d62728">threshold {threshold:.4g}</text>')
    parts.append(f'<text x="{pad}" y="14" font-size="11">images per score bin (max {cmax})</text></svg>')
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:22px} table.settings td{padding:2px 10px;border-bottom:1px solid #eee;font-size:13px}
.grid{display:flex;flex-wrap:wrap;gap:14px}
.card{border:1px solid #ccc;border-radius:6px;padding:8px;width:270px}
.card.anomalous{border:3px solid #d62728}
.card img{width:256px;height:auto;image-rendering:pixelated;display:block;margin-bottom:4px}
.verdict{font-weight:bold}.verdict.bad{color:#d62728}.verdict.ok{color:#2a7d2a}
.name{font-size:11px;color:#555;word-break:break-all}
"""


def render_report(images: torch.Tensor | Sequence[torch.Tensor], result: DetectionResult,
                  detector_info: dict[str, Any] | None = None, *, title: str = "anomgan inspection report",
                  max_side: int = 512) -> str:
    """The report as an HTML string. images: (B, C, H, W) in [0, 1] (or a list of (C, H, W)),
    in the order of ``result``."""
    n = len(result)
    if len(images) != n:
        raise ValueError(f"render_report: got {len(images)} images for {n} results")
    scores = result.scores.detach().float().cpu()
    order = sorted(range(n), key=lambda i: (-scores[i].item() if math.isfinite(scores[i].item()) else -math.inf))
    maps = result.maps.detach().float().cpu()
    vmax = float(torch.quantile(maps.flatten()[::max(1, maps.numel() // 1_000_000)], 0.999)) if maps.numel() else 1.0
    names = result.names or [f"image {i}" for i in range(n)]
    n_bad = int(result.labels.sum())
    cards = []
    for rank, i in enumerate(order, 1):
        bad = bool(result.labels[i])
        rgb = overlay(images[i], maps[i], vmax)
        uri = _png_data_uri(rgb, max_side)
        zoom = ""
        if max(rgb.shape[:2]) > 2 * ZOOM:  # small defects vanish in a thumbnail: show the hottest spot
            (y0, x0), crop = hottest_crop(rgb, maps[i], ZOOM)
            zoom = (f'<img class="zoom" src="{_png_data_uri(crop, ZOOM)}" alt="zoom">'
                    f'<div class="name">zoom: pixels ({y0}..{y0 + crop.shape[0]}, '
                    f'{x0}..{x0 + crop.shape[1]}) around the highest residual</div>')
        verdict = "ANOMALOUS" if bad else ("normal" if result.threshold is not None else "no threshold")
        cards.append(
            f'<div class="card{" anomalous" if bad else ""}"><img class="overlay" src="{uri}" '
            f'alt="{html.escape(names[i])}">{zoom}<div>#{rank} score <b>{scores[i].item():.5g}</b> '
            f'<span class="verdict {"bad" if bad else "ok"}">{verdict}</span></div>'
            f'<div class="name">{html.escape(names[i])}</div></div>')
    info = dict(detector_info or {})
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in info.items())
    thr = "none" if result.threshold is None else f"{result.threshold:.5g}"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{n} images, <b>{n_bad}</b> above the threshold ({thr}). Heat-map: per-pixel "
            f"residual, colour scale 0 to {vmax:.4g} (99.9th percentile over all images).</p>"
            f"{histogram_svg(scores.tolist(), result.threshold)}"
            f"<h2>Images, most anomalous first</h2><div class='grid'>{''.join(cards)}</div>"
            f"<details open><summary><h2 style='display:inline'>Detector</h2></summary>"
            f"<table class='settings'>{rows}</table></details>"
            "<script>window.addEventListener('load',()=>{const ims=[...document.images];"
            "document.body.dataset.imagesLoaded=ims.filter(i=>i.complete&&i.naturalWidth>0).length;});"
            "</script></body></html>")


def write_report(path, images, result: DetectionResult, detector_info: dict[str, Any] | None = None,
                 **kwargs) -> None:
    """Write :func:`render_report` to ``path`` atomically."""
    atomic_write_text(path, render_report(images, result, detector_info, **kwargs))
