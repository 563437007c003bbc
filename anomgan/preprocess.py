"""Turn what users pass to ``detect`` into one float32 (B, C, H, W) tensor in [0, 1].

Accepted ``batch``
------------------
* a torch tensor or numpy array of rank 4 (B, C, H, W), rank 3 (C, H, W) = one image, or
  rank 2 (H, W) = one grayscale image (safe: a rank-2 array cannot be anything else). Channels
  come first: a rank-3 array whose first axis is not 1 or 3 is rejected (if its last axis is,
  the error says it looks like (H, W, C)). A stack of grayscale images must be (B, 1, H, W):
  a (3, H, W) array is read as one RGB image.
* dtypes: float16/bfloat16/float32/float64 with values in [0, 1]; uint8 (divided by 255);
  uint16 (divided by 65535). Other dtypes (bool, signed ints, ...) are rejected.
* a list or tuple whose items are each one image: a PIL image, a file path (str or
  os.PathLike, read with Pillow), or a (C, H, W) / (H, W) tensor or array as above. All items
  must have the same height and width.
  PIL modes: "1", "L" (1 channel), "P" (converted to RGB), "RGB" (3), "I;16*" (16-bit,
  / 65535), "I" (integers that must lie in [0, 65535], / 65535), "F" (floats in [0, 1]).
  Modes with alpha or other colour spaces (RGBA, LA, CMYK, ...) are rejected: convert them.

Channel rule (``channels`` = the model's channel count, 1 or 3; None keeps the input's)
------------------------------------------------------------------------------------------
* 3 channels given to a 1-channel model -> luminance 0.299 R + 0.587 G + 0.114 B (ITU-R
  BT.601, as Pillow's ``convert("L")``), with a UserWarning.
* 1 channel given to a 3-channel model -> replicated to 3 channels, with a UserWarning.
* any other channel count (2, 4, ...) is rejected. With ``channels=None``, list items must
  all have the same channel count.

Errors
------
ValueError / TypeError naming the item (``batch[i]``, and the path for files): empty batches,
NaN values, floats outside [0, 1], wrong ranks, unsupported dtypes or modes, mixed image sizes
in a list, unreadable files.

The result is on the input tensor's device (CPU for everything else) and may share memory
with the input when that is already a contiguous float32 (B, C, H, W) tensor; it is never
written to here, so callers must not write to it either.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from .data.images import LUMA, rgb_to_gray

__all__ = ["to_batch", "LUMA"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _where(i: int | None, path=None) -> str:
    s = "batch" if i is None else f"batch[{i}]"
    return s + (f" ({os.fspath(path)!r})" if path is not None else "")


def _array_to_tensor(x, where: str, batched: bool = False) -> torch.Tensor:
    """A numpy array or tensor -> float tensor in [0, 1] (float32, same rank). ``batched``:
    the first axis indexes images (errors name the image as where[i])."""
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint16:
            x = x.astype(np.int32)  # torch has limited uint16 support; the scale is kept below
            t = torch.from_numpy(x)
            return _scale(t, 65535.0, where)
        if x.dtype.kind not in "uf" or x.dtype.kind == "u" and x.dtype != np.uint8:
            raise TypeError(f"{where}: unsupported dtype {x.dtype}; expected uint8, uint16 or "
                            "float in [0, 1]")
        x = np.ascontiguousarray(x).astype(x.dtype.newbyteorder("="), copy=False)
        if not x.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
            x = x.copy()
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: expected a tensor, array, PIL image or path, "
                        f"got {type(x).__name__}")
    if x.dtype == torch.uint8:
        return _scale(x, 255.0, where)
    if x.dtype == torch.uint16:
        return _scale(x.to(torch.int32), 65535.0, where)
    if x.dtype not in _FLOATS:
        raise TypeError(f"{where}: unsupported dtype {x.dtype}; expected uint8, uint16 or "
                        "float in [0, 1]")
    x = x.detach().to(torch.float32)
    _check_floats(x, where, batched)
    return x


def _check_floats(x: torch.Tensor, where: str, batched: bool) -> None:
    """NaN and [0, 1] checks; for a batched (B, ...) tensor the error names the image."""
    if x.numel() == 0:
        return
    flat = x.reshape(x.shape[0], -1) if batched else x.reshape(1, -1)
    name = (lambda i: f"{where}[{i}]") if batched else (lambda i: where)
    nan = torch.isnan(flat).any(1)
    if bool(nan.any()):
        i = int(nan.nonzero()[0, 0])
        raise ValueError(f"{name(i)}: contains NaN values ({int(torch.isnan(flat[i]).sum())} "
                         f"of {flat.shape[1]})")
    lo, hi = flat.amin(1), flat.amax(1)
    bad = (lo < 0) | (hi > 1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name(i)}: float values must lie in [0, 1], got min {float(lo[i])} "
                         f"and max {float(hi[i])} (uint8 data should keep its uint8 dtype)")


def _scale(t: torch.Tensor, full: float, where: str) -> torch.Tensor:
    if t.dtype != torch.uint8 and t.numel() and (int(t.min()) < 0 or int(t.max()) > full):
        raise ValueError(f"{where}: integer values must lie in [0, {int(full)}], got "
                         f"[{int(t.min())}, {int(t.max())}]")
    # float32 division of exact integers is correctly rounded: uint8 v/255 and uint16
    # (257 v)/65535 give identical results
    return t.detach().to(torch.float32) / full


def _pil_to_tensor(img, where: str) -> torch.Tensor:
    """PIL image -> (C, H, W) float32 in [0, 1]."""
    mode = img.mode
    if mode == "P":
        img, mode = img.convert("RGB"), "RGB"
    if mode == "1":
        img, mode = img.convert("L"), "L"
    a = np.asarray(img)
    if mode == "L" or mode == "RGB":
        t = _array_to_tensor(a, where)
    elif mode.startswith("I;16"):
        t = _array_to_tensor(a.astype(np.uint16), where)
    elif mode == "I":
        t = _scale(torch.from_numpy(a.astype(np.int64)), 65535.0, where)
    elif mode == "F":
        t = _array_to_tensor(a.astype(np.float32), where)
    else:
        raise ValueError(f"{where}: unsupported PIL image mode {mode!r}; convert it to 'L' or "
                         f"'RGB' first (e.g. img.convert('RGB'))")
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1)


def _read_path(p, where: str) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as img:
            img.load()
            return _pil_to_tensor(img, where)
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{where}: cannot read the image: {e}") from None


def _is_pil(x) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, Image.Image)


def _hwc_hint(shape) -> str:
    return (" (it looks like (H, W, C): move channels first, e.g. .permute(2, 0, 1) or "
            "np.moveaxis(a, -1, 0))") if len(shape) >= 3 and shape[-1] in (1, 3) else ""


def _check_channels(shape, where: str) -> None:
    c = shape[-3]
    if c not in (1, 3):
        raise ValueError(f"{where}: images must have 1 or 3 channels (channels first), got "
                         f"shape {tuple(shape)}{_hwc_hint(shape)}")


def _item(x, i: int) -> torch.Tensor:
    """One list item -> (C, H, W) float32."""
    if isinstance(x, (str, os.PathLike)):
        return _read_path(x, _where(i, x))
    where = _where(i)
    if _is_pil(x):
        return _pil_to_tensor(x, where)
    if isinstance(x, (np.ndarray, torch.Tensor)):
        if x.ndim not in (2, 3):
            raise ValueError(f"{where}: a list item must be one image, (C, H, W) or (H, W), "
                             f"got shape {tuple(x.shape)}")
        if x.ndim == 3:
            _check_channels(x.shape, where)
        if 0 in x.shape:
            raise ValueError(f"{where}: empty image of shape {tuple(x.shape)}")
        t = _array_to_tensor(x, where)
        return t[None] if t.dim() == 2 else t
    raise TypeError(f"{where}: expected a PIL image, a file path, a tensor or an array, got "
                    f"{type(x).__name__}")


def _convert_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    c = x.shape[1]
    if channels is None or c == channels:
        return x
    if c == 3 and channels == 1:
        warnings.warn("converting RGB images to grayscale (luminance 0.299 R + 0.587 G + "
                      "0.114 B) for a 1-channel model", UserWarning, stacklevel=3)
        return rgb_to_gray(x)
    warnings.warn("replicating grayscale images to 3 channels for a 3-channel model",
                  UserWarning, stacklevel=3)
    return x.expand(-1, 3, -1, -1).contiguous()


def to_batch(batch, *, channels: int | None = None) -> torch.Tensor:
    """``batch`` (see the module docstring) -> float32 (B, C, H, W) in [0, 1] with C =
    ``channels`` (or the input's channel count when None)."""
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"to_batch: channels must be 1, 3 or None, got {channels!r}")
    if isinstance(batch, (np.ndarray, torch.Tensor)):
        shape = tuple(batch.shape)
        if len(shape) not in (2, 3, 4):
            raise ValueError(f"batch: expected (B, C, H, W), (C, H, W) or (H, W), got shape "
                             f"{shape}")
        if 0 in shape:
            raise ValueError(f"batch: empty (shape {shape})")
        if len(shape) >= 3:
            _check_channels(shape, "batch")
        x = _array_to_tensor(batch, "batch", batched=len(shape) == 4)
        while x.dim() < 4:
            x = x[None]
    elif isinstance(batch, (list, tuple)):
        if len(batch) == 0:
            raise ValueError("batch: empty list")
        items = [_item(x, i) for i, x in enumerate(batch)]
        h, w = items[0].shape[1:]
        for i, t in enumerate(items):
            if t.shape[1:] != (h, w):
                path = batch[i] if isinstance(batch[i], (str, os.PathLike)) else None
                raise ValueError(f"{_where(i, path)}: size {t.shape[2]}x{t.shape[1]} (W x H) "
                                 f"differs from batch[0]'s {w}x{h}; all images of a batch "
                                 "must have one size")
        if channels is None and len({t.shape[0] for t in items}) > 1:
            i = next(i for i, t in enumerate(items) if t.shape[0] != items[0].shape[0])
            raise ValueError(f"{_where(i)}: has {items[i].shape[0]} channel(s) but batch[0] "
                             f"has {items[0].shape[0]}; pass channels=1 or 3 to convert")
        c = channels if channels is not None else items[0].shape[0]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            items = [_convert_channels(t[None], c)[0] for t in items]
        for msg in {str(w.message) for w in caught}:
            warnings.warn(msg, UserWarning, stacklevel=2)
        x = torch.stack(items)
    elif _is_pil(batch) or isinstance(batch, (str, os.PathLike)):
        raise TypeError("batch: a single PIL image or path must be wrapped in a list")
    else:
        raise TypeError(f"batch: expected a tensor, a numpy array or a list of PIL images / "
                        f"paths, got {type(batch).__name__}")
    return _convert_channels(x, channels).contiguous()

