"""Images in, float32 (N, C, H, W) tensors with values in [0, 1] out: anomgan's one ingestion policy.

Training reads images with :func:`as_images` (and its narrower forms :func:`to_images`,
:func:`load_images`, :func:`load_folder`, :func:`load_labelled_folder`), detection with
:func:`to_batch` (``Detector.detect``, the CLI, evaluation). Both go through the same functions
below and follow the same rules; where they differ it is said here.

Sources
-------
* a numpy array or a torch tensor (see *Shapes*);
* a list or tuple; each item is a PIL image, an image file path (``str`` or ``os.PathLike``,
  read with Pillow), or an array / tensor holding one image (rank 2 or 3) or a batch (rank 4).
  The items' images are concatenated in order;
* :func:`as_images` also takes a single path, a single PIL image, or a folder (its image files,
  see :func:`anomgan.data.folder.list_images`). :func:`to_batch` wants single paths and PIL
  images wrapped in a list.

Shapes and layout (a channel count is 1 = grey, 3 = RGB or 4 = RGBA)
-----------------
* (H, W): one grey image.
* (N, C, H, W) or (N, H, W, C): a batch. ``layout="auto"`` (the default) reads the channels on
  axis 1 when only axis 1 holds a channel count, on the last axis when only that one does. When
  both do (e.g. (N, 3, 8, 4)) the shape is ambiguous: ValueError, pass ``layout="CHW"`` or
  ``layout="HWC"``; when neither does: ValueError. Two-channel arrays (grey + alpha) are not read.
* rank 3: for :func:`as_images` / :func:`to_images`, (N, H, W) = N grey images (MNIST as
  stored); for :func:`to_batch` and for list items, one image (C, H, W) or (H, W, C), by the
  same layout rule.

Dtypes and values
-----------------
uint8 is divided by 255, uint16 by 65535, bool gives {0, 1}; float16, bfloat16, float32 and
float64 must already lie in [0, 1] (no NaN). Other dtypes are a TypeError (signed integers have
no known range). Big-endian and read-only numpy arrays are fine.
PIL modes: "1" (bool), "L", "LA" (alpha dropped), "RGB", "RGBA", "I;16*" (uint16), "I" (values
must lie in [0, 65535]; / 65535), "F" (floats in [0, 1]); any other mode ("P", "CMYK", "YCbCr",
...) is converted to RGB, or RGBA when it has transparency.

Channels (``channels``: None, 1 or 3)
--------
The alpha channel of RGBA is dropped. ``channels=None`` then keeps each image's channel count,
1 converts RGB to grey by the ITU-R 601-2 luma weights :data:`LUMA` (as Pillow's ``"L"``), 3
repeats a grey plane. :func:`to_batch` warns (UserWarning, once per call for each kind) when it
converts grey <-> RGB; :func:`as_images` converts silently.

Size
----
:func:`as_images` with ``image_size`` (an int s for (s, s), or (h, w)) resizes every image to
exactly that size (bilinear, antialiased, aspect ratio not kept, clamped to [0, 1]), after the
channel conversion. Without it, and always in :func:`to_batch` (which never resizes), the images
of one call must share one size; likewise one channel count (alpha not counted) when
``channels`` is None.

Results
-------
:func:`as_images` & co.: a new contiguous CPU float32 tensor that never shares memory with the
input. :func:`to_batch`: a contiguous float32 tensor on the input tensor's device (CPU for
everything else) that may share memory with the input when that already is a contiguous float32
(B, C, H, W) tensor; it must not be written to.

Errors
------
TypeError for an unsupported type or dtype; ValueError naming the data (``name`` or ``batch``,
``name[i]`` for the i-th image or list item, with the path of a file) for a bad shape or value;
:class:`ImageFileError` (a ValueError) for a file or PIL image that cannot be read or has more
pixels than :data:`MAX_IMAGE_PIXELS` (50 MP; ``$ANOMGAN_MAX_IMAGE_PIXELS`` overrides it, checked
from the file's header before decoding), or for a list item that does not fit the first one. With ``on_error="skip"`` :func:`as_images` skips such
an item with a UserWarning naming it instead.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, replace
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .._validate import check_channels, check_choice, check_int
from .folder import folder_images, labelled_subfolders

LUMA = (0.299, 0.587, 0.114)
CHANNEL_COUNTS = (1, 3, 4)
LAYOUTS = ("auto", "CHW", "HWC")

# dtype -> the value that maps to 1.0 (None: floats, already in [0, 1])
_NUMPY_FULL_SCALE = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535, np.dtype(np.bool_): 1,
                     np.dtype(np.float16): None, np.dtype(np.float32): None, np.dtype(np.float64): None}
_TORCH_FULL_SCALE = {torch.uint8: 255, torch.uint16: 65535, torch.bool: 1, torch.float16: None,
                     torch.bfloat16: None, torch.float32: None, torch.float64: None}
_DTYPES = "uint8, uint16, bool or float in [0, 1]"

_CONVERSION_WARNINGS = {
    (3, 1): "converting RGB images to grayscale (luminance 0.299 R + 0.587 G + 0.114 B) for a "
            "1-channel model",
    (1, 3): "replicating grayscale images to 3 channels for a 3-channel model",
}


# The largest image (width x height pixels) read from a file or a PIL image; a larger one raises
# ImageFileError before it is decoded (a decompression bomb: a tiny PNG may declare 20000x20000).
# The environment variable ANOMGAN_MAX_IMAGE_PIXELS overrides it (0: no limit of anomgan's own).
MAX_IMAGE_PIXELS = 50_000_000
MAX_IMAGE_PIXELS_ENV = "ANOMGAN_MAX_IMAGE_PIXELS"


class ImageFileError(ValueError):
    """An image file or PIL image cannot be read, is larger than :func:`max_image_pixels`, or a
    list item does not fit the first one (size or channel count); the message names it."""


def max_image_pixels() -> int | None:
    """The pixel limit in force: ``$ANOMGAN_MAX_IMAGE_PIXELS`` when set (an int >= 0; 0 = none),
    else :data:`MAX_IMAGE_PIXELS` (None or 0 = none). ValueError naming the variable when bad."""
    raw = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not raw:
        return MAX_IMAGE_PIXELS or None
    try:
        limit = int(raw.replace("_", ""))
    except ValueError:
        limit = -1
    if limit < 0:
        raise ValueError(f"{MAX_IMAGE_PIXELS_ENV}={raw!r}: expected a number of pixels >= 0 (0: no limit)")
    return limit or None


def check_pixel_limit(size: tuple[int, int], where: str) -> None:
    """ImageFileError naming ``where``, its ``size`` (W, H) and the limit when it has more pixels
    than :func:`max_image_pixels`."""
    limit = max_image_pixels()
    w, h = size
    if limit is not None and w * h > limit:
        raise ImageFileError(f"{where}: image is {w}x{h} (W x H) = {w * h} pixels, more than the limit of "
                             f"{limit} (set {MAX_IMAGE_PIXELS_ENV} to raise it)")


# ------------------------------------------------------------------------------ arguments
def check_image_size(where: str, image_size: Any) -> tuple[int, int] | None:
    """None, an int s >= 1 (-> (s, s)) or a pair (h, w) of ints >= 1 -> (h, w) or None."""
    if image_size is None:
        return None
    if isinstance(image_size, (tuple, list, torch.Size)):
        if len(image_size) != 2:
            raise TypeError(f"{where}: image_size must be an int or a pair (height, width), "
                            f"got {image_size!r}")
        h, w = (check_int(where, f"image_size[{i}]", v, minimum=1) for i, v in enumerate(image_size))
        return h, w
    s = check_int(where, "image_size", image_size, minimum=1)
    return s, s


# ------------------------------------------------------------------------------ PIL and files
def _is_pil(x: Any) -> bool:
    image = sys.modules.get("PIL.Image")  # not imported yet: x cannot be a PIL image
    return image is not None and isinstance(x, image.Image)


def pil_to_array(img: Any, where: str) -> np.ndarray:
    """A PIL image -> numpy (H, W) (modes "1", "L", "LA", "I;16*", "I", "F") or (H, W, C) with C
    in {3, 4} (RGB, RGBA and every other mode), of dtype bool, uint8, uint16 or float32, values
    as stored. Raises :class:`ImageFileError` for mode "I" values outside [0, 65535]."""
    check_pixel_limit(img.size, where)
    mode = img.mode
    if mode in ("1", "L", "RGB", "RGBA"):
        return np.array(img)
    if mode == "LA":
        return np.array(img)[..., 0]
    if mode.startswith("I;16"):
        return np.array(img).astype(np.uint16)
    if mode == "I":
        a = np.array(img)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ImageFileError(f"{where}: integer values must lie in [0, 65535], got "
                                 f"[{a.min()}, {a.max()}]")
        return a.astype(np.uint16)
    if mode == "F":
        return np.array(img, dtype=np.float32)
    return np.array(img.convert("RGBA" if "A" in mode or "transparency" in img.info else "RGB"))


def read_image_file(path: str | os.PathLike, where: str) -> np.ndarray:
    """Read one image file fully into a numpy array (see :func:`pil_to_array`). Raises
    :class:`ImageFileError` naming ``where`` when it is missing, cannot be read or is larger than
    :func:`max_image_pixels` (checked from the header, before decoding)."""
    from PIL import Image, UnidentifiedImageError

    max_image_pixels()  # a bad $ANOMGAN_MAX_IMAGE_PIXELS is its own error, not this file's
    try:
        with warnings.catch_warnings():  # anomgan's own limit applies, not Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_pixel_limit(img.size, where)
                img.load()
                return pil_to_array(img, where)
    except ImageFileError:
        raise
    except FileNotFoundError:
        raise ImageFileError(f"{where}: no such file") from None
    except Image.DecompressionBombError as exc:  # over Pillow's own limit (Image.MAX_IMAGE_PIXELS x 2)
        raise ImageFileError(f"{where}: image too large to read ({exc})") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ImageFileError(f"{where}: cannot read the image ({type(exc).__name__}: {exc})") from None


# ------------------------------------------------------------------------------ pixels
def _as_tensor(x: Any, where: str) -> tuple[torch.Tensor, int | None]:
    """A numpy array or tensor -> (a tensor of the same values, sharing memory where it can;
    the dtype's full scale: 255, 65535, 1 for bool, None for floats). uint16 comes back as int32
    (torch's uint16 support is partial). TypeError for other types and dtypes."""
    if isinstance(x, np.ndarray):
        dtype = x.dtype.newbyteorder("=")
        if dtype not in _NUMPY_FULL_SCALE:
            raise TypeError(f"{where}: unsupported dtype {x.dtype}; expected {_DTYPES}")
        x = np.ascontiguousarray(x).astype(np.int32 if dtype == np.uint16 else dtype, copy=False)
        if not x.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
            x = x.copy()
        return torch.from_numpy(x), _NUMPY_FULL_SCALE[dtype]
    if isinstance(x, torch.Tensor):
        if x.dtype not in _TORCH_FULL_SCALE:
            raise TypeError(f"{where}: unsupported dtype {x.dtype}; expected {_DTYPES} (other "
                            "integer types have no known range)")
        full = _TORCH_FULL_SCALE[x.dtype]
        return (x.detach().to(torch.int32) if x.dtype == torch.uint16 else x.detach()), full
    raise TypeError(f"{where}: expected a numpy array or a torch tensor, got {type(x).__name__}")


def to_unit_float(x: torch.Tensor, full: int | None, where: str, *, batched: bool) -> torch.Tensor:
    """Pixels -> float32 in [0, 1]: integers and bools divided by their full scale ``full``;
    floats (``full`` None) converted, then checked for NaN and [0, 1] (ValueError naming
    ``where``, or ``where[i]`` for image i when ``batched``: axis 0 indexes images)."""
    if full is not None:
        return x.to(torch.float32).div_(float(full))
    y = x.to(torch.float32)
    _check_unit_range(y, where, batched)
    return y


def _check_unit_range(x: torch.Tensor, where: str, batched: bool) -> None:
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
        raise ValueError(f"{name(i)}: float values must lie in [0, 1], got min {float(lo[i])} and "
                         f"max {float(hi[i])}; keep 8-bit data uint8 (or divide by 255, 16-bit "
                         "data by 65535)")


# ------------------------------------------------------------------------------ layout
def _layout_error(shape: tuple[int, ...], layout: str, where: str) -> str:
    if layout == "auto" and shape[-3] in CHANNEL_COUNTS:
        return (f"{where}: shape {shape} is ambiguous: the channels may be axis -3 ({shape[-3]}) or "
                f"the last axis ({shape[-1]}); pass layout='CHW' or layout='HWC' to say which")
    want = {"CHW": "on axis -3 (layout 'CHW')", "HWC": "on the last axis (layout 'HWC')",
            "auto": "first (..., C, H, W) or last (..., H, W, C)"}[layout]
    hint = (" (grey + alpha is not read: keep the first channel)"
            if 2 in (shape[-3], shape[-1]) else "")
    return f"{where}: images must have 1, 3 or 4 channels {want}, got shape {shape}{hint}"


def channel_layout(shape: tuple[int, ...], layout: str, where: str) -> str:
    """"CHW" or "HWC" for an image or batch of shape (..., A, H, B) by the module's layout rule
    (``layout`` "auto", or "CHW" / "HWC" checked against the shape); ValueError naming ``where``,
    the shape and the fix otherwise."""
    shape = tuple(shape)
    first, last = shape[-3] in CHANNEL_COUNTS, shape[-1] in CHANNEL_COUNTS
    if (layout == "CHW" and first) or (layout == "HWC" and last):
        return layout
    if layout == "auto" and first != last:
        return "CHW" if first else "HWC"
    raise ValueError(_layout_error(shape, layout, where))


def to_nchw(x: torch.Tensor, where: str, *, rank3: str, layout: str) -> tuple[torch.Tensor, bool]:
    """A rank 2, 3 or 4 tensor -> ((N, C, H, W) view, whether axis 0 of ``x`` indexed images).
    ``rank3``: "stack" reads rank 3 as (N, H, W) grey images, "image" as one image."""
    if x.ndim == 2:
        return x[None, None], False
    if x.ndim == 3 and rank3 == "stack":
        return x[:, None], True
    if x.ndim not in (3, 4):
        forms = "(N, H, W)" if rank3 == "stack" else "(C, H, W), (H, W, C)"
        raise ValueError(f"{where}: expected (H, W), {forms}, (N, C, H, W) or (N, H, W, C), "
                         f"got shape {tuple(x.shape)}")
    batched = x.ndim == 4
    hwc = channel_layout(x.shape, layout, where) == "HWC"
    x = x if batched else x[None]
    return (x.permute(0, 3, 1, 2) if hwc else x), batched


# ------------------------------------------------------------------------------ channels, size
def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] -> (N, 1, H, W): ITU-R 601-2 luma (Pillow's "L")."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True).clamp_(0.0, 1.0)


def color_channels(x: torch.Tensor) -> int:
    """The channel count of (N, C, H, W) ``x`` once alpha is dropped: 1 or 3."""
    return 3 if x.shape[1] == 4 else x.shape[1]


def convert_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """(N, C, H, W) float, C in {1, 3, 4} -> (N, channels, H, W): alpha dropped, then RGB -> grey
    by :data:`LUMA` or grey -> RGB by repetition; None keeps the count. May return a view."""
    if x.shape[1] == 4:
        x = x[:, :3]
    if channels is None or channels == x.shape[1]:
        return x
    return rgb_to_gray(x) if channels == 1 else x.expand(-1, 3, -1, -1)


def _warn_conversions(counts: Iterable[int], channels: int | None) -> None:
    for c in sorted(set(counts)):
        msg = _CONVERSION_WARNINGS.get((c, channels))
        if msg:
            warnings.warn(msg, UserWarning, stacklevel=5)  # the front end's caller


#: how images of another size than the model's are read, by training and detection alike (chosen
#: at training time, stored in the detector): "resize" them to the model size, or keep them and
#: "tile" (training: random model-size crops; detection: overlapping tiles)
INPUT_MODES = ("resize", "tile")


def resize(x: torch.Tensor, image_size: tuple[int, int] | None) -> torch.Tensor:
    """Bilinear antialiased resize of (N, C, H, W) float to ``image_size``; clamped to [0, 1]."""
    if image_size is None or tuple(x.shape[-2:]) == tuple(image_size):
        return x
    return F.interpolate(x, size=image_size, mode="bilinear", antialias=True,
                         align_corners=False).clamp_(0.0, 1.0)


# ------------------------------------------------------------------------------ the shared reader
@dataclass(frozen=True)
class _Policy:
    """What a front end asks of the shared reader; everything else is the module's policy."""

    name: str                                   # the data, as error messages name it
    image_size: tuple[int, int] | None = None   # resize to (h, w); None: sizes must agree
    channels: int | None = None                 # None: channel counts must agree
    layout: str = "auto"                        # "auto", "CHW" or "HWC"
    on_error: str = "raise"                     # "skip": drop a bad list item with a warning
    rank3: str = "stack"                        # a bare rank-3 array: "stack" or "image"
    warn: bool = False                          # UserWarning on grey <-> RGB conversion
    own_copy: bool = True                       # CPU result never sharing the input's memory
    single_files: bool = True                   # a lone path / folder / PIL image is accepted
    resizes: bool = True                        # the front end takes image_size (error hints)


def _training_policy(where: str, *, name: str, image_size: Any, channels: Any, on_error: str = "raise",
                     layout: str = "auto") -> _Policy:
    """The policy of :func:`as_images` and its narrower forms (``where``: the function)."""
    return _Policy(name=name, image_size=check_image_size(where, image_size),
                   channels=check_channels(where, channels, allow_none=True),
                   layout=check_choice(where, "layout", layout, LAYOUTS),
                   on_error=check_choice(where, "on_error", on_error, ("raise", "skip")))


def _detection_policy(channels: Any, layout: str) -> _Policy:
    """The policy of :func:`to_batch`: rank 3 is one image, never resized, warns on conversion,
    keeps the input's device and memory, single files must come in a list."""
    return _Policy(name="batch", channels=check_channels("to_batch", channels, allow_none=True),
                   layout=check_choice("to_batch", "layout", layout, LAYOUTS), rank3="image",
                   warn=True, own_copy=False, single_files=False, resizes=False)


def _read_array(x: Any, where: str, policy: _Policy) -> tuple[torch.Tensor, torch.Tensor]:
    """An array / tensor -> (float32 (N, C, H, W) in [0, 1] with C in {1, 3, 4}, the tensor
    it was read from)."""
    src, full = _as_tensor(x, where)
    if policy.own_copy:
        src = src.cpu()
    if 0 in src.shape:
        raise ValueError(f"{where}: no images (empty, shape {tuple(src.shape)})")
    t, batched = to_nchw(src, where, rank3=policy.rank3, layout=policy.layout)
    return to_unit_float(t, full, where, batched=batched), src


def _finish(x: torch.Tensor, policy: _Policy) -> torch.Tensor:
    return resize(convert_channels(x, policy.channels), policy.image_size)


def _read_whole_array(x: Any, policy: _Policy) -> torch.Tensor:
    """A bare array / tensor source -> the front end's result (see the module doc)."""
    t, src = _read_array(x, policy.name, policy)
    if policy.warn:
        _warn_conversions([color_channels(t)], policy.channels)
    out = _finish(t, policy).contiguous()
    if policy.own_copy and out.untyped_storage().data_ptr() == src.untyped_storage().data_ptr():
        out = out.clone()
    return out


def _item_name(name: str, i: int, item: Any) -> str:
    path = f" ({os.fspath(item)!r})" if isinstance(item, (str, os.PathLike)) else ""
    return f"{name}[{i}]{path}"


def _check_item_type(item: Any, where: str) -> None:
    if not (isinstance(item, (str, os.PathLike, np.ndarray, torch.Tensor)) or _is_pil(item)):
        raise TypeError(f"{where}: expected a PIL image, a file path, a numpy array or a torch "
                        f"tensor, got {type(item).__name__}")


def _read_item(item: Any, where: str, policy: _Policy) -> torch.Tensor:
    """One list item (a path, a PIL image or an array) -> float32 (n, C, H, W) in [0, 1], C in
    {1, 3, 4}. A file or PIL image that cannot be read (or holds floats outside [0, 1]) raises
    :class:`ImageFileError`."""
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return _read_array(item, where, replace(policy, rank3="image"))[0]
    arr = read_image_file(item, where) if isinstance(item, (str, os.PathLike)) else pil_to_array(item, where)
    try:
        return _read_array(arr, where, replace(policy, rank3="image", layout="HWC"))[0]
    except ValueError as exc:
        raise ImageFileError(str(exc)) from None


def _check_fits(x: torch.Tensor, where: str, first: tuple[str, torch.Tensor], policy: _Policy) -> None:
    """ImageFileError when list item ``x`` does not fit the ``first`` accepted one (its name,
    its tensor): another channel count when ``policy.channels`` is None, another size when
    ``policy.image_size`` is None."""
    label, ref = first
    if policy.channels is None and color_channels(x) != color_channels(ref):
        raise ImageFileError(f"{where}: has {color_channels(x)} channel(s) but {label} has "
                             f"{color_channels(ref)}; pass channels=1 or 3 to convert")
    if policy.image_size is None and x.shape[-2:] != ref.shape[-2:]:
        fix = ("pass image_size= to resize them all" if policy.resizes
               else "all images of a batch must have one size")
        raise ImageFileError(f"{where}: size {x.shape[-1]}x{x.shape[-2]} (W x H) differs from "
                             f"{label}'s {ref.shape[-1]}x{ref.shape[-2]}; {fix}")


def _read_list(items: list, policy: _Policy) -> torch.Tensor:
    """List items (see the module doc) -> float32 (N, C, H, W), converted and resized."""
    if not items:
        raise ValueError(f"{policy.name}: empty list, no images given")
    out, counts, first = [], set(), None
    for i, item in enumerate(items):
        where = _item_name(policy.name, i, item)
        _check_item_type(item, where)
        try:
            x = _read_item(item, where, policy)
            if first is not None:
                _check_fits(x, where, first, policy)
        except (ValueError, TypeError) as exc:
            if policy.on_error == "raise":
                raise
            warnings.warn(f"skipping {exc}", UserWarning, stacklevel=3)
            continue
        first = first or (f"{policy.name}[{i}]", x)
        counts.add(color_channels(x))
        out.append(_finish(x, policy))
    if not out:
        raise ValueError(f"{policy.name}: no readable images")
    if policy.warn:
        _warn_conversions(counts, policy.channels)
    return torch.cat(out)


def _read_source(source: Any, policy: _Policy) -> torch.Tensor:
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return _read_whole_array(source, policy)
    if isinstance(source, (list, tuple)):
        return _read_list(list(source), policy)
    if isinstance(source, (str, os.PathLike)) or _is_pil(source):
        if not policy.single_files:
            raise TypeError(f"{policy.name}: a single PIL image or path must be wrapped in a list")
        if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
            return _read_list(folder_images(source), policy)
        return _read_list([source], policy)
    also = ", a folder, a path or a PIL image" if policy.single_files else ""
    raise TypeError(f"{policy.name}: expected a numpy array, a torch tensor or a list of images "
                    f"(PIL images, paths, arrays){also}; got {type(source).__name__}")


# ------------------------------------------------------------------------------ front ends
def as_images(source: Any, *, image_size: Any = None, channels: int | None = None,
              on_error: str = "raise", name: str = "images", layout: str = "auto") -> torch.Tensor:
    """Training's reader: a folder, a path, a PIL image, a numpy array / torch tensor, or a list
    of paths, PIL images and arrays -> a new float32 CPU tensor (N, C, H, W) in [0, 1].

    ``image_size``: None (keep; sizes must agree), an int s or (h, w): resize; ``channels``:
    None (keep; counts must agree), 1 or 3; ``on_error``: "raise" or "skip" (bad list items and
    files); ``name``: what errors call the data; ``layout``: "auto", "CHW" or "HWC" (module doc)."""
    policy = _training_policy("as_images", name=name, image_size=image_size, channels=channels,
                              on_error=on_error, layout=layout)
    return _read_source(source, policy)


def to_images(x: Any, *, image_size: Any = None, channels: int | None = None, name: str = "images",
              layout: str = "auto") -> torch.Tensor:
    """:func:`as_images` for one numpy array / torch tensor (TypeError for anything else)."""
    policy = _training_policy("to_images", name=name, image_size=image_size, channels=channels,
                              layout=layout)
    return _read_whole_array(x, policy)


def load_images(items: Iterable[Any], *, image_size: Any = None, channels: int | None = None,
                on_error: str = "raise", name: str = "images") -> torch.Tensor:
    """:func:`as_images` for an iterable of paths, PIL images and arrays."""
    policy = _training_policy("load_images", name=name, image_size=image_size, channels=channels,
                              on_error=on_error)
    return _read_list(list(items), policy)


def load_folder(folder: str | os.PathLike, *, image_size: Any = None, channels: int | None = None,
                recursive: bool = False, on_error: str = "raise", name: str = "images") -> torch.Tensor:
    """Every image file of ``folder`` (sorted by path; sub-folders too when ``recursive``) ->
    float32 (N, C, H, W) in [0, 1] as :func:`as_images`. ValueError naming the folder when it
    holds no image file."""
    policy = _training_policy("load_folder", name=name, image_size=image_size, channels=channels,
                              on_error=on_error)
    return _read_list(folder_images(folder, recursive=recursive), policy)


def load_labelled_folder(root: str | os.PathLike, *, normal: str = "good", image_size: Any = None,
                         channels: int | None = None, on_error: str = "raise"
                         ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, list[str]]:
    """A folder laid out as ``root/<normal>/*`` plus one sub-folder per anomaly class
    (``root/scratch/*``, ``root/stain/*``, ... e.g. MVTec AD's ``test/``), sub-folders read
    recursively.

    Returns (normal (N, C, H, W), anomalous (M, C, H, W) or None, anomaly class labels (M,)
    int64 indexing ``class_names`` or None, class_names sorted). Without ``image_size``
    (``channels``) all images must share one size (channel count); a mismatch raises
    ImageFileError naming the sub-folder."""
    normal_dir, names = labelled_subfolders(root, normal)
    kw = dict(image_size=image_size, channels=channels, recursive=True, on_error=on_error)
    norm = load_folder(normal_dir, name=normal, **kw)
    if not names:
        return norm, None, None, []
    parts, labels = [], []
    for k, n in enumerate(names):
        sub = os.path.join(os.fspath(root), n)
        x = load_folder(sub, name=n, **kw)
        if x.shape[1:] != norm.shape[1:]:
            raise ImageFileError(f"{sub}: images are {tuple(x.shape[1:])} (C, H, W) but the normal ones are "
                                 f"{tuple(norm.shape[1:])}; pass image_size= and channels=")
        parts.append(x)
        labels.append(torch.full((x.shape[0],), k, dtype=torch.int64))
    return norm, torch.cat(parts), torch.cat(labels), names


def to_batch(batch: Any, *, channels: int | None = None, layout: str = "auto") -> torch.Tensor:
    """Detection's reader: a numpy array / torch tensor (rank 3 = one image) or a list of PIL
    images, paths and arrays -> float32 (B, C, H, W) in [0, 1], never resized, with C =
    ``channels`` (1 or 3; None keeps the input's). Warns when it converts grey <-> RGB; may
    share memory with a float32 tensor input (see the module doc)."""
    return _read_source(batch, _detection_policy(channels, layout))
