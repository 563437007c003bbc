"""In-memory images -> float32 tensors (N, C, H, W) in [0, 1] of a chosen size and channel count.

Accepted arrays (numpy or torch):
  * shape (H, W) (one grey image), (N, H, W) (grey), (N, C, H, W) or (N, H, W, C) with
    C in {1, 2, 3, 4}; a 4-D array is read as channels-first when its axis 1 has 1-4 entries,
    else as channels-last (so an (N, 3, 32, 3) array counts as channels-first);
  * dtypes: uint8 (divided by 255), uint16 (divided by 65535), bool, and floats, which must
    already lie in [0, 1] (NaN or values outside are a ValueError).
Channels: 1 -> 3 repeats the grey plane; 3 -> 1 uses the ITU-R 601-2 luma weights (the same
as Pillow's "L" conversion); a 4th (alpha) channel is dropped, 2 channels are grey+alpha.
Resizing is bilinear with antialiasing (torch.nn.functional.interpolate); the aspect ratio is
not kept: every image becomes exactly (H, W) = image_size.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)

_INT_SCALE = {torch.uint8: 255.0, torch.uint16: 65535.0}


def size_pair(image_size: Any, name: str = "image_size") -> tuple[int, int] | None:
    """``None``, an int s (-> (s, s)) or a pair (h, w) of positive ints -> (h, w) or None."""
    if image_size is None:
        return None
    if isinstance(image_size, bool):
        raise TypeError(f"{name} must be an int or a pair (height, width), got a bool")
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    try:
        h, w = image_size
        h, w = int(h), int(w)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair (height, width), got {image_size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be positive, got {(h, w)}")
    return h, w


def check_channels(channels: Any, name: str = "channels") -> int | None:
    if channels is None:
        return None
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or int(channels) not in (1, 3):
        raise ValueError(f"{name} must be 1 or 3 (or None to keep the input's), got {channels!r}")
    return int(channels)


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint16:  # torch.from_numpy supports uint16 only in recent builds
            return torch.from_numpy(x.astype(np.int32)).to(torch.float32).div_(65535.0).clamp_(0, 1)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name}: unsupported array dtype {x.dtype}; expected uint8, uint16, bool or float")
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def to_unit_float(x: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Scale a tensor of a supported dtype to float32 in [0, 1] (see module doc)."""
    if x.dtype in _INT_SCALE:
        return x.to(torch.float32).div_(_INT_SCALE[x.dtype])
    if x.dtype == torch.bool:
        return x.to(torch.float32)
    if x.dtype.is_floating_point:
        y = x.to(torch.float32)
        if y.numel():
            if not bool(torch.isfinite(y).all()):
                raise ValueError(f"{name}: contains NaN or infinite values")
            lo, hi = float(y.min()), float(y.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(f"{name}: float images must lie in [0, 1], got values in [{lo:g}, {hi:g}]; "
                                 "divide by 255 (8-bit) or 65535 (16-bit) first")
        return y
    raise TypeError(f"{name}: unsupported dtype {x.dtype}; expected uint8, uint16, bool or a float dtype "
                    "(other integer types have no known range)")


def to_nchw(x: torch.Tensor, name: str = "images") -> torch.Tensor:
    """View a 2-D, 3-D or 4-D tensor as (N, C, H, W) following the module doc's rules."""
    if x.ndim == 2:
        return x[None, None]
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if 1 <= x.shape[1] <= 4:
            return x
        if 1 <= x.shape[3] <= 4:
            return x.permute(0, 3, 1, 2)
        raise ValueError(f"{name}: shape {tuple(x.shape)} has no channel axis of size 1-4 "
                         "(expected (N, C, H, W) or (N, H, W, C))")
    raise ValueError(f"{name}: expected a 2-D, 3-D or 4-D array, got shape {tuple(x.shape)}")


def convert_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """(N, C, H, W) float with C in 1..4 -> (N, channels, H, W); alpha is dropped."""
    c = x.shape[1]
    if c == 2:
        x, c = x[:, :1], 1
    elif c == 4:
        x, c = x[:, :3], 3
    if channels is None or channels == c:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1)
    return rgb_to_gray(x)


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] -> (N, 1, H, W): ITU-R 601-2 luma (Pillow's "L")."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True).clamp_(0.0, 1.0)


def resize(x: torch.Tensor, image_size: tuple[int, int] | None) -> torch.Tensor:
    """Bilinear antialiased resize of (N, C, H, W) float to ``image_size``; clamped to [0, 1]."""
    if image_size is None or tuple(x.shape[-2:]) == tuple(image_size):
        return x
    return F.interpolate(x, size=image_size, mode="bilinear", antialias=True,
                         align_corners=False).clamp_(0.0, 1.0)


def to_images(x: Any, *, image_size: Any = None, channels: int | None = None,
              name: str = "images") -> torch.Tensor:
    """Convert a numpy array / torch tensor of images to float32 (N, C, H, W) in [0, 1].

    ``image_size``: None (keep), an int or (h, w); ``channels``: None (keep; 2 -> 1, 4 -> 3),
    1 or 3. Always returns a new contiguous CPU tensor. Raises TypeError / ValueError naming
    ``name`` on an unsupported type, dtype, shape or value range."""
    size = size_pair(image_size)
    channels = check_channels(channels)
    src = _as_tensor(x, name)
    t = to_nchw(src, name)
    if t.shape[0] == 0:
        raise ValueError(f"{name}: no images (shape {tuple(t.shape)})")
    t = resize(convert_channels(to_unit_float(t, name), channels), size).contiguous()
    if t.untyped_storage().data_ptr() == src.untyped_storage().data_ptr():
        t = t.clone()  # never alias the caller's memory
    return t
