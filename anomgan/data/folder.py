"""Image files (PNG, JPEG, TIFF, BMP; grey or RGB; 8- or 16-bit) -> float32 (N, C, H, W) in [0, 1].

Pixel values: 8-bit modes are divided by 255, 16-bit ones ("I;16*", and "I" whose values lie
in [0, 65535]) by 65535, 32-bit float ("F") images must already lie in [0, 1]. Palette, CMYK,
YCbCr and similar modes are converted to RGB, 1-bit to grey; alpha is dropped. Then channels and
size follow :func:`anomgan.data.images.to_images` (bilinear antialiased resize, luma for
RGB -> grey), so a file and the same pixels passed as an array give the same tensor.

Bad files: an unreadable, truncated or non-image file with an image extension, or one
inconsistent with the others (a different size when ``image_size`` is None, a different channel
count when ``channels`` is None), raises :class:`ImageFileError` naming the file when
``on_error="raise"`` (the default), or is skipped with a :class:`UserWarning` naming it when
``on_error="skip"``.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .images import check_channels, convert_channels, resize, size_pair, to_nchw, to_unit_float

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class ImageFileError(ValueError):
    """An image file could not be read or does not fit the others; the message names it."""


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def list_images(folder: str | os.PathLike, *, recursive: bool = False) -> list[str]:
    """Sorted paths of the image files (by extension, case-insensitive) in ``folder``; hidden
    files are ignored. Raises FileNotFoundError / NotADirectoryError naming the folder."""
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        raise FileNotFoundError(f"{folder}: no such folder")
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder}: not a folder")
    out = []
    walker = os.walk(folder) if recursive else [(folder, [], os.listdir(folder))]
    for root, dirs, files in walker:
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in files:
            p = os.path.join(root, f)
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(p):
                out.append(p)
    return sorted(out)


def pil_to_array(img: Any, name: str = "image") -> np.ndarray:
    """A PIL image -> numpy (H, W) or (H, W, C) array of uint8, uint16 or float32 (see module doc)."""
    mode = img.mode
    if mode in ("L", "RGB", "LA", "RGBA"):
        return np.array(img)
    if mode.startswith("I;16"):
        a = np.array(img)
        return a.astype(np.uint16) if a.dtype != np.uint16 else a
    if mode == "I":
        a = np.array(img)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"{name}: 32-bit integer image with values outside [0, 65535]")
        return a.astype(np.uint16)
    if mode == "F":
        return np.array(img, dtype=np.float32)
    if mode == "1":
        return np.array(img.convert("L"))
    return np.array(img.convert("RGBA" if "A" in mode or "transparency" in img.info else "RGB"))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one file fully into a numpy array (see :func:`pil_to_array`). Raises
    :class:`ImageFileError` naming the file when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            img.load()
            return pil_to_array(img, path)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ImageFileError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


def _one(arr: np.ndarray, name: str) -> torch.Tensor:
    if arr.dtype == np.uint16:
        t = torch.from_numpy(arr.astype(np.int32)).to(torch.float32).div_(65535.0)
    else:
        t = to_unit_float(torch.from_numpy(np.ascontiguousarray(arr)), name)
    if t.ndim == 3:
        t = t[None]  # (1, H, W, C)
    return to_nchw(t, name)


def load_images(items: Iterable[Any], *, image_size: Any = None, channels: int | None = None,
                on_error: str = "raise") -> torch.Tensor:
    """Paths and/or PIL images -> float32 (N, C, H, W) in [0, 1] (module doc for the rules)."""
    _check_on_error(on_error)
    size = size_pair(image_size)
    channels = check_channels(channels)
    out: list[torch.Tensor] = []
    ref_shape = None  # (C, H, W) of the first accepted image, for consistency checks
    for i, item in enumerate(items):
        name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"image #{i}"
        if not isinstance(item, (str, os.PathLike)) and not (hasattr(item, "mode") and hasattr(item, "getdata")):
            raise TypeError(f"{name}: expected a path or a PIL image, got {type(item).__name__}")
        try:
            arr = read_image(item) if isinstance(item, (str, os.PathLike)) else pil_to_array(item, name)
            t = _one(arr, name)
            c = t.shape[1]
            eff_c = {2: 1, 4: 3}.get(c, c)
            if ref_shape is not None:
                if channels is None and eff_c != ref_shape[0]:
                    raise ImageFileError(f"{name}: has {eff_c} channel(s) but the earlier images have "
                                         f"{ref_shape[0]}; pass channels=1 or 3 to convert them all")
                if size is None and tuple(t.shape[-2:]) != ref_shape[1:]:
                    raise ImageFileError(f"{name}: is {t.shape[-2]}x{t.shape[-1]} but the earlier images are "
                                         f"{ref_shape[1]}x{ref_shape[2]}; pass image_size= to resize them all")
            t = resize(convert_channels(t, channels), size)
        except (ImageFileError, ValueError, TypeError) as exc:
            if on_error == "raise":
                raise ImageFileError(str(exc) if name in str(exc) else f"{name}: {exc}") from None
            warnings.warn(f"skipping {exc}", UserWarning, stacklevel=2)
            continue
        if ref_shape is None:
            ref_shape = (eff_c, *tuple(t.shape[-2:]))
        out.append(t)
    if not out:
        raise ValueError("no readable images" if on_error == "skip" else "no images given")
    return torch.cat(out).contiguous()


def load_folder(folder: str | os.PathLike, *, image_size: Any = None, channels: int | None = None,
                recursive: bool = False, on_error: str = "raise") -> torch.Tensor:
    """Every image file of ``folder`` (sorted by path) -> float32 (N, C, H, W) in [0, 1].

    Raises ValueError naming the folder when it holds no image file."""
    _check_on_error(on_error)
    paths = list_images(folder, recursive=recursive)
    if not paths:
        raise ValueError(f"{os.fspath(folder)}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return load_images(paths, image_size=image_size, channels=channels, on_error=on_error)


def load_labelled_folder(root: str | os.PathLike, *, normal: str = "good", image_size: Any = None,
                         channels: int | None = None, on_error: str = "raise"
                         ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, list[str]]:
    """A folder laid out as ``root/<normal>/*`` plus one sub-folder per anomaly class
    (``root/scratch/*``, ``root/stain/*``, ... e.g. MVTec AD's ``test/``).

    Returns (normal (N, C, H, W), anomalous (M, C, H, W) or None, anomaly class labels (M,)
    int64 indexing ``class_names`` or None, class_names sorted). Sub-folders are read
    recursively. Without ``image_size`` (``channels``) all images must share one size (channel
    count); a mismatch raises ImageFileError naming the sub-folder."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root}: not a folder")
    normal_dir = os.path.join(root, normal)
    if not os.path.isdir(normal_dir):
        raise FileNotFoundError(f"{root}: no '{normal}' sub-folder of normal images")
    names = sorted(d for d in os.listdir(root) if d != normal and not d.startswith(".")
                   and os.path.isdir(os.path.join(root, d)) and list_images(os.path.join(root, d), recursive=True))
    norm = load_folder(normal_dir, image_size=image_size, channels=channels, recursive=True, on_error=on_error)
    if not names:
        return norm, None, None, []
    parts, labels = [], []
    for k, n in enumerate(names):
        sub = os.path.join(root, n)
        x = load_folder(sub, image_size=image_size, channels=channels, recursive=True, on_error=on_error)
        if x.shape[1:] != norm.shape[1:]:
            raise ImageFileError(f"{sub}: images are {tuple(x.shape[1:])} (C, H, W) but the normal ones are "
                                 f"{tuple(norm.shape[1:])}; pass image_size= and channels=")
        parts.append(x)
        labels.append(torch.full((x.shape[0],), k, dtype=torch.int64))
    return norm, torch.cat(parts), torch.cat(labels), names
