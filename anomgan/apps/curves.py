"""The ROC and precision-recall curves of an evaluation as one PNG, drawn with Pillow only.

Two panels side by side (:data:`PLOT_SIZE` pixels in all): the ROC curve with the chance
diagonal, and the step-wise PR curve (whose area is the average precision) with the share of
anomalous images as the chance line. Each has axes, ticks at 0, 0.2, ..., 1, axis labels and
the area in its title; the detector's threshold is marked as a red point on both, the best-F1
threshold as an orange one on the PR curve.
"""
from __future__ import annotations

import numpy as np

__all__ = ["write_curves_png", "render_curves", "PLOT_SIZE"]

PANEL = (560, 520)  # width, height of one panel
PLOT_SIZE = (2 * PANEL[0], PANEL[1])
_MARGIN = {"left": 74, "right": 24, "top": 56, "bottom": 64}
_BLUE, _RED, _ORANGE, _GREY, _GRID, _INK = ((31, 119, 180), (214, 39, 40), (255, 127, 14),
                                            (150, 150, 150), (228, 228, 228), (30, 30, 30))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType: the bitmap font
        return ImageFont.load_default()


def _text_size(draw, text: str, font) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0


class _Axes:
    """A [0, 1] x [0, 1] plot area inside one panel whose top-left corner is at ``(ox, oy)``."""

    def __init__(self, ox: int, oy: int):
        self.x0 = ox + _MARGIN["left"]
        self.x1 = ox + PANEL[0] - _MARGIN["right"]
        self.y0 = oy + _MARGIN["top"]
        self.y1 = oy + PANEL[1] - _MARGIN["bottom"]
        self.ox, self.oy = ox, oy

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return (self.x0 + x * (self.x1 - self.x0), self.y1 - y * (self.y1 - self.y0))


def _frame(img, draw, ax: _Axes, title: str, xlabel: str, ylabel: str) -> None:
    from PIL import Image, ImageDraw

    small, mid, big = _font(13), _font(15), _font(17)
    for t in np.linspace(0, 1, 6):
        x, _ = ax.xy(t, 0)
        _, y = ax.xy(0, t)
        draw.line([(x, ax.y0), (x, ax.y1)], fill=_GRID)
        draw.line([(ax.x0, y), (ax.x1, y)], fill=_GRID)
        draw.line([(x, ax.y1), (x, ax.y1 + 5)], fill=_INK)  # ticks
        draw.line([(ax.x0 - 5, y), (ax.x0, y)], fill=_INK)
        label = f"{t:.1f}"
        w, h = _text_size(draw, label, small)
        draw.text((x - w / 2, ax.y1 + 8), label, fill=_INK, font=small)
        draw.text((ax.x0 - 9 - w, y - h / 2 - 2), label, fill=_INK, font=small)
    draw.rectangle([ax.x0, ax.y0, ax.x1, ax.y1], outline=_INK)
    w, _ = _text_size(draw, xlabel, mid)
    draw.text(((ax.x0 + ax.x1) / 2 - w / 2, ax.y1 + 30), xlabel, fill=_INK, font=mid)
    w, h = _text_size(draw, ylabel, mid)
    tmp = Image.new("RGB", (w + 4, h + 8), "white")
    ImageDraw.Draw(tmp).text((2, 0), ylabel, fill=_INK, font=mid)
    rot = tmp.rotate(90, expand=True)
    img.paste(rot, (ax.ox + 8, int((ax.y0 + ax.y1) / 2 - rot.size[1] / 2)))
    w, _ = _text_size(draw, title, big)
    draw.text(((ax.x0 + ax.x1) / 2 - w / 2, ax.oy + 18), title, fill=_INK, font=big)


def _dashed(draw, ax: _Axes, a: tuple[float, float], b: tuple[float, float], n: int = 40) -> None:
    for k in range(0, n, 2):
        p = [a[i] + (b[i] - a[i]) * k / n for i in range(2)]
        q = [a[i] + (b[i] - a[i]) * (k + 1) / n for i in range(2)]
        draw.line([ax.xy(*p), ax.xy(*q)], fill=_GREY, width=1)


def _point(draw, ax: _Axes, x: float, y: float, colour, label: str, row: int) -> None:
    px, py = ax.xy(x, y)
    r = 6
    draw.ellipse([px - r, py - r, px + r, py + r], outline=colour, width=3)
    small = _font(13)
    # the legend row, bottom right inside the axes
    w, h = _text_size(draw, label, small)
    lx, ly = ax.x1 - w - 10, ax.y1 - 12 - (row + 1) * (h + 8)
    _, top, _, bottom = draw.textbbox((lx, ly), label, font=small)
    cy = (top + bottom) / 2
    draw.ellipse([lx - 16, cy - 4, lx - 8, cy + 4], outline=colour, width=2)
    draw.text((lx, ly), label, fill=colour, font=small)


def render_curves(labels, scores, *, threshold: float | None = None, auroc: float | None = None,
                  aupr: float | None = None, title: str | None = None):
    """The figure as a PIL RGB image of :data:`PLOT_SIZE` (see the module doc)."""
    from PIL import Image, ImageDraw

    from ..scoring.metrics import average_precision, f1_max, pr_curve, roc_auc, roc_curve

    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    fpr, tpr, _ = roc_curve(y, s)
    recall, precision, _ = pr_curve(y, s)
    auroc = roc_auc(y, s) if auroc is None else auroc
    aupr = average_precision(y, s) if aupr is None else aupr
    img = Image.new("RGB", PLOT_SIZE, "white")
    draw = ImageDraw.Draw(img)
    roc_ax, pr_ax = _Axes(0, 0), _Axes(PANEL[0], 0)
    head = f"{title}: " if title else ""
    _frame(img, draw, roc_ax, f"{head}ROC, AUROC {auroc:.3f}", "False positive rate", "True positive rate")
    _frame(img, draw, pr_ax, f"{head}PR, AUPR {aupr:.3f}", "Recall", "Precision")

    _dashed(draw, roc_ax, (0, 0), (1, 1))
    draw.line([roc_ax.xy(a, b) for a, b in zip(fpr, tpr)], fill=_BLUE, width=3, joint="curve")
    prevalence = float(y.mean())
    _dashed(draw, pr_ax, (0, prevalence), (1, prevalence))
    steps = [(recall[0], precision[0])]
    for k in range(1, len(recall)):  # rectangles of width dR at height P_k: the AP's area
        steps += [(recall[k - 1], precision[k]), (recall[k], precision[k])]
    draw.line([pr_ax.xy(a, b) for a, b in steps], fill=_BLUE, width=3)

    best, best_t = f1_max(y, s)
    flag = s >= best_t
    _point(draw, pr_ax, float(flag[y].mean()), float(y[flag].mean()), _ORANGE,
           f"best F1 {best:.3f} at {best_t:.4g}", 1 if threshold is not None else 0)
    if threshold is not None:
        flag = s >= threshold
        f, t = float(flag[~y].mean()), float(flag[y].mean())
        p = float(y[flag].mean()) if flag.any() else 1.0
        _point(draw, roc_ax, f, t, _RED, f"threshold {threshold:.4g}: FPR {f:.3f}, TPR {t:.3f}", 0)
        _point(draw, pr_ax, t, p, _RED, f"threshold {threshold:.4g}: P {p:.3f}, R {t:.3f}", 0)
    else:
        _point_free_note(draw, roc_ax, "no threshold in the detector")
    return img


def _point_free_note(draw, ax: _Axes, text: str) -> None:
    small = _font(13)
    w, h = _text_size(draw, text, small)
    draw.text((ax.x1 - w - 10, ax.y1 - 12 - h - 8), text, fill=_GREY, font=small)


def write_curves_png(path, labels, scores, **kwargs) -> None:
    """:func:`render_curves` written to ``path`` as a PNG, atomically."""
    from ..fileio import atomic_path

    img = render_curves(labels, scores, **kwargs)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", optimize=True)
