"""Overlapping tiles for images larger than the model's input, and blending of per-tile maps.

Layout
------
Along each axis of length L, with tile size t and stride s (1 <= s <= t), tiles start at
0, s, 2s, ... and the last one is flush with the border (start L - t), so every pixel is
covered and no tile reaches outside the image. An image exactly one tile large gives one tile.
Images smaller than a tile (H < t or W < t) are rejected unless ``pad`` is given
("replicate" or "reflect"): they are then padded on the bottom / right up to t (with
``torch.nn.functional.pad``), tiled, and the blended maps are cropped back to (H, W).
Tiles are ordered image-major, then row of tiles, then column; ``TileLayout.index()`` gives
(image, y0, x0) for every tile.

Blending
--------
Each tile's map is weighted by a separable window w(i) w(j) that is strictly positive
("hann": sin^2(pi (i + 1/2) / t), "triangular": 1 - |2 (i + 1/2) / t - 1|, "uniform": 1),
divided by the sum of the windows of all tiles covering the pixel. The normalised weights of a
pixel sum to 1, so constant maps blend to that constant and a pixel covered by one tile gets
exactly that tile's value (the identity when the image is one tile). Accumulation is float64
(:func:`anomgan.ops.blend_tiles_add`: the C++ kernel on the CPU),
the result float32 (float64 for float64 maps) on the maps' device.

Memory: :func:`tiled_apply` cuts, scores and blends at most ``max_tiles`` tiles at a time;
only the (B, H, W) float64 accumulator and one (H, W) weight sum are kept whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .._validate import check_int
from ..ops.blend_tiles import blend_tiles_add

__all__ = ["TileLayout", "tile_starts", "plan_tiles", "cut_tiles", "blend_tiles", "tiled_apply",
           "WINDOWS", "PADS"]

WINDOWS = ("hann", "triangular", "uniform")
PADS = (None, "replicate", "reflect")


def _int(fn: str, name: str, v, minimum: int) -> int:
    return check_int(fn, name, v, minimum=minimum)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets along one axis: 0, stride, ... and a last tile flush with the end."""
    if length < tile:
        raise ValueError(f"tile_starts: length {length} is smaller than the tile {tile}")
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return starts


@dataclass(frozen=True)
class TileLayout:
    """Where the tiles of a batch of B images of one size (height, width) lie.
    padded_height / padded_width: the size after padding (equal to height / width unless the
    image was smaller than a tile and ``pad`` was given)."""
    batch: int
    height: int
    width: int
    padded_height: int
    padded_width: int
    tile: int
    stride: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    pad: str | None = None

    @property
    def tiles_per_image(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def n_tiles(self) -> int:
        return self.batch * self.tiles_per_image

    def position(self, k: int) -> tuple[int, int, int]:
        """(image, y0, x0) of flat tile k (in the padded image)."""
        b, r = divmod(k, self.tiles_per_image)
        i, j = divmod(r, len(self.xs))
        return b, self.ys[i], self.xs[j]

    def index(self, start: int = 0, stop: int | None = None, device=None) -> torch.Tensor:
        """(n, 3) int64 tensor of (image, y0, x0) of flat tiles start..stop (all by default)."""
        stop = self.n_tiles if stop is None else stop
        k = torch.arange(start, stop, dtype=torch.int64, device=device)
        ys = torch.tensor(self.ys, dtype=torch.int64, device=device)
        xs = torch.tensor(self.xs, dtype=torch.int64, device=device)
        b, r = k.div(self.tiles_per_image, rounding_mode="floor"), k.remainder(self.tiles_per_image)
        i, j = r.div(len(self.xs), rounding_mode="floor"), r.remainder(len(self.xs))
        return torch.stack([b, ys[i], xs[j]], dim=1)


def plan_tiles(height: int, width: int, tile: int, *, stride: int | None = None,
               overlap: int | None = None, batch: int = 1, pad: str | None = None) -> TileLayout:
    """Layout for ``batch`` images of (height, width). Give ``stride`` or ``overlap``
    (= tile - stride; pixels) or neither (overlap = tile // 4)."""
    fn = "plan_tiles"
    _int(fn, "height", height, 1)
    _int(fn, "width", width, 1)
    _int(fn, "tile", tile, 1)
    _int(fn, "batch", batch, 1)
    if stride is not None and overlap is not None:
        raise ValueError(f"{fn}: give stride or overlap, not both (got {stride} and {overlap})")
    if stride is None:
        overlap = tile // 4 if overlap is None else _int(fn, "overlap", overlap, 0)
        if overlap >= tile:
            raise ValueError(f"{fn}: overlap must be < tile ({tile}), got {overlap}")
        stride = tile - overlap
    else:
        _int(fn, "stride", stride, 1)
        if stride > tile:
            raise ValueError(f"{fn}: stride must be <= tile ({tile}) so that tiles cover the "
                             f"image, got {stride}")
    if pad not in PADS:
        raise ValueError(f"{fn}: pad must be one of {PADS}, got {pad!r}")
    if (height < tile or width < tile) and pad is None:
        raise ValueError(f"{fn}: images of {height}x{width} are smaller than the tile size "
                         f"{tile}; resize them or pass pad='replicate' or pad='reflect'")
    ph, pw = max(height, tile), max(width, tile)
    if pad == "reflect" and (ph - height >= height or pw - width >= width):
        raise ValueError(f"{fn}: pad='reflect' needs images larger than half the tile "
                         f"({height}x{width} for tile {tile}); use pad='replicate'")
    return TileLayout(batch, height, width, ph, pw, tile, stride,
                      tuple(tile_starts(ph, tile, stride)), tuple(tile_starts(pw, tile, stride)),
                      pad)


def _check_images(fn: str, images) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{fn}: images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or 0 in images.shape:
        raise ValueError(f"{fn}: images must be a non-empty (B, C, H, W) tensor, "
                         f"got shape {tuple(images.shape)}")


def _padded(images: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    dh, dw = layout.padded_height - layout.height, layout.padded_width - layout.width
    if dh == 0 and dw == 0:
        return images
    if not images.is_floating_point():
        images = images.float()
    return F.pad(images, (0, dw, 0, dh), mode=layout.pad)


def _cut(images: torch.Tensor, layout: TileLayout, start: int, stop: int) -> torch.Tensor:
    """Tiles start..stop of ``images`` as a new (n, C, t, t) tensor: one gather from the view
    of every t×t window."""
    t = layout.tile
    b, y, x = layout.index(start, stop, images.device).unbind(1)
    windows = images.unfold(2, t, 1).unfold(3, t, 1)  # (B, C, H - t + 1, W - t + 1, t, t) view
    return windows[b, :, y, x]


def cut_tiles(images: torch.Tensor, tile: int, *, stride: int | None = None,
              overlap: int | None = None, pad: str | None = None
              ) -> tuple[torch.Tensor, TileLayout]:
    """All tiles of a (B, C, H, W) batch: ((n_tiles, C, tile, tile), layout). Materialises
    every tile; use :func:`tiled_apply` to bound memory."""
    _check_images("cut_tiles", images)
    B, _, H, W = images.shape
    layout = plan_tiles(H, W, tile, stride=stride, overlap=overlap, batch=B, pad=pad)
    return _cut(_padded(images, layout), layout, 0, layout.n_tiles), layout


def _window(kind: str, t: int, device) -> torch.Tensor:
    """(t, t) float64: the separable window w(i) w(j)."""
    w = _window1(kind, t, device)
    return w[:, None] * w[None, :]


def _window1(kind: str, t: int, device) -> torch.Tensor:
    """(t,) float64: the 1-d window w(i) (module doc)."""
    i = (torch.arange(t, dtype=torch.float64, device=device) + 0.5) / t
    if kind == "hann":
        w = torch.sin(torch.pi * i) ** 2
    elif kind == "triangular":
        w = 1 - (2 * i - 1).abs()
    elif kind == "uniform":
        w = torch.ones_like(i)
    else:
        raise ValueError(f"blend: window must be one of {WINDOWS}, got {kind!r}")
    return w


def _axis_weight_sum(w1: torch.Tensor, starts: tuple[int, ...], length: int) -> torch.Tensor:
    """(length,) float64: the sum of the 1-d window ``w1`` placed at every start."""
    t = w1.shape[0]
    idx = (torch.tensor(starts, dtype=torch.int64, device=w1.device)[:, None]
           + torch.arange(t, device=w1.device)).reshape(-1)
    return torch.zeros(length, dtype=torch.float64, device=w1.device).index_add_(
        0, idx, w1.repeat(len(starts)))


class _Blender:
    """Accumulates weighted tile maps into (B, H, W) float64.

    The window is separable and the tiles lie on a product grid, so the window sum is
    separable too, wsum = wy ⊗ wx, and a tile's normalised weight at (y0 + i, x0 + j) is
    (w[i] / wy[y0 + i]) (w[j] / wx[x0 + j]). A chunk of tiles is added with one
    :func:`anomgan.ops.blend_tiles_add` (the C++ kernel on the CPU; tile order is kept: each
    pixel sums its tiles in the same order as a loop over the tiles would)."""

    def __init__(self, layout: TileLayout, window: str, device, dtype):
        self.layout, self.dtype = layout, dtype
        self.w1 = _window1(window, layout.tile, device)
        self.wy = _axis_weight_sum(self.w1, layout.ys, layout.padded_height)
        self.wx = _axis_weight_sum(self.w1, layout.xs, layout.padded_width)
        self.acc = torch.zeros(layout.batch, layout.padded_height, layout.padded_width,
                               dtype=torch.float64, device=device)

    @property
    def wsum(self) -> torch.Tensor:
        """(H, W) float64: the sum of the windows of all tiles covering each pixel."""
        return self.wy[:, None] * self.wx[None, :]

    def add(self, maps: torch.Tensor, start: int) -> None:
        lay, t = self.layout, self.layout.tile
        dev = self.acc.device
        origins = lay.index(start, start + maps.shape[0], dev)
        _, y, x = origins.unbind(1)
        r = torch.arange(t, device=dev)
        ny = self.w1[None, :] / self.wy[y[:, None] + r]                 # (n, t)
        nx = self.w1[None, :] / self.wx[x[:, None] + r]
        blend_tiles_add(self.acc, maps, ny, nx, origins)

    def result(self) -> torch.Tensor:
        lay = self.layout
        return self.acc[:, :lay.height, :lay.width].to(self.dtype)


def _check_maps(fn: str, maps: torch.Tensor, n: int, t: int) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or not maps.is_floating_point():
        raise TypeError(f"{fn}: tile maps must be a floating-point torch.Tensor, "
                        f"got {type(maps).__name__} {getattr(maps, 'dtype', '')}")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if tuple(maps.shape) != (n, t, t):
        raise ValueError(f"{fn}: tile maps must have shape ({n}, {t}, {t}) (or ({n}, 1, {t}, "
                         f"{t})), got {tuple(maps.shape)}")
    return maps


def blend_tiles(maps: torch.Tensor, layout: TileLayout, *, window: str = "hann") -> torch.Tensor:
    """Per-tile maps (n_tiles, t, t) or (n_tiles, 1, t, t), in the layout's tile order ->
    (B, H, W) maps of the original image size (float32; float64 for float64 maps)."""
    maps = _check_maps("blend_tiles", maps, layout.n_tiles, layout.tile)
    dtype = torch.float64 if maps.dtype == torch.float64 else torch.float32
    bl = _Blender(layout, window, maps.device, dtype)
    bl.add(maps, 0)
    return bl.result()


def tiled_apply(fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                images: torch.Tensor, tile: int, *, stride: int | None = None,
                overlap: int | None = None, pad: str | None = None, window: str = "hann",
                max_tiles: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``fn`` on the tiles of ``images`` (B, C, H, W), at most ``max_tiles`` tiles per
    call, and blend its maps back.

    fn: (n, C, tile, tile) -> (scores (n,), maps (n, tile, tile)) — e.g. ``Method.score``.
    Returns (tile_scores (B, tiles_per_image) in tile order, maps (B, H, W)); the caller
    aggregates tile scores into an image score (e.g. their max)."""
    name = "tiled_apply"
    _check_images(name, images)
    _int(name, "max_tiles", max_tiles, 1)
    if window not in WINDOWS:
        raise ValueError(f"{name}: window must be one of {WINDOWS}, got {window!r}")
    B, _, H, W = images.shape
    layout = plan_tiles(H, W, tile, stride=stride, overlap=overlap, batch=B, pad=pad)
    src = _padded(images, layout)
    scores, bl = [], None
    for start in range(0, layout.n_tiles, max_tiles):
        stop = min(start + max_tiles, layout.n_tiles)
        out = fn(_cut(src, layout, start, stop))
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"{name}: fn must return (scores, maps), got {type(out).__name__}")
        s, m = out
        m = _check_maps(name, m, stop - start, tile)
        if not isinstance(s, torch.Tensor) or s.reshape(-1).shape[0] != stop - start:
            raise ValueError(f"{name}: fn must return {stop - start} scores, got "
                             f"{tuple(s.shape) if isinstance(s, torch.Tensor) else s!r}")
        if bl is None:
            dtype = torch.float64 if m.dtype == torch.float64 else torch.float32
            bl = _Blender(layout, window, m.device, dtype)
        bl.add(m, start)
        scores.append(s.reshape(-1))
    return torch.cat(scores).reshape(B, layout.tiles_per_image), bl.result()
