"""MVTec-AD-style folders: the layout that MVTec AD, VisA, MPDD and BTAD exports share.

::

    root/train/good/*.png                      normal training images
    root/test/good/*.png                       normal test images
    root/test/<defect>/*.png                   defective test images, one folder per defect type
    root/ground_truth/<defect>/<stem>_mask.png pixel masks of the defective test images
                                               (<stem>.png, as some exports name them, is
                                               accepted too; any image extension)

BTAD's ``ok`` is read as ``good`` when there is no ``good`` folder. Masks are optional: a defect
type without a ``ground_truth/<defect>`` folder simply has none (no pixel metrics for it); a
defective image without a mask where its type has a mask folder is a warning. Masks are read as
bool (pixel value > 0, any channel) and resized with nearest-neighbour sampling to their
image's size when they differ only by scale (see :func:`read_mask`).

:func:`read_mvtec` only lists files (no image is opened); it raises ValueError naming the root
and what is missing.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from .folder import IMAGE_EXTENSIONS, list_images

__all__ = ["MVTecEntry", "MVTecDataset", "read_mvtec", "is_mvtec_root", "train_good_dir",
           "train_good_if_mvtec", "read_mask", "LAYOUT"]

NORMAL_NAMES = ("good", "ok")  # "ok": BTAD
LAYOUT = ("root/train/good/*, root/test/good/*, root/test/<defect>/*, "
          "root/ground_truth/<defect>/<name>_mask.png")
#: a mask whose aspect ratio differs from its image's by more than this is an error, not resized
ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True)
class MVTecEntry:
    """One test image: its path, label (0 normal, 1 defective), defect type ("good" for the
    normal ones) and mask path (None: a normal image, or no mask for it)."""

    path: str
    label: int
    defect: str
    mask: str | None = None


@dataclass
class MVTecDataset:
    """What :func:`read_mvtec` found under ``root``."""

    root: str
    train_good: list[str] = field(default_factory=list)
    test: list[MVTecEntry] = field(default_factory=list)

    @property
    def test_normal(self) -> list[MVTecEntry]:
        return [e for e in self.test if e.label == 0]

    @property
    def test_anomalous(self) -> list[MVTecEntry]:
        return [e for e in self.test if e.label == 1]

    @property
    def defects(self) -> list[str]:
        """The defect types of the test images, sorted."""
        return sorted({e.defect for e in self.test if e.label == 1})

    @property
    def has_masks(self) -> bool:
        return any(e.mask is not None for e in self.test)


def _normal_dir(parent: str) -> str | None:
    for name in NORMAL_NAMES:
        p = os.path.join(parent, name)
        if os.path.isdir(p):
            return p
    return None


def is_mvtec_root(path) -> bool:
    """True when ``path`` is a folder with a ``train/good`` (or ``train/ok``) sub-folder and no
    image file of its own (so a plain folder of images is never taken for one)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = os.fspath(path)
    return (os.path.isdir(path) and _normal_dir(os.path.join(path, "train")) is not None
            and not list_images(path))


def train_good_dir(root) -> str | None:
    """``root/train/good`` (or BTAD's ``root/train/ok``) when it is a folder, else None."""
    return _normal_dir(os.path.join(os.fspath(root), "train"))


def train_good_if_mvtec(normal):
    """``root/train/good`` when ``normal`` is an MVTec-style root (:func:`is_mvtec_root`), else
    ``normal`` unchanged: what ``anomgan.train`` does with its ``normal`` argument."""
    if is_mvtec_root(normal):
        return train_good_dir(normal)
    return normal


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _mask_index(folder: str) -> dict[str, str]:
    """stem (``_mask`` suffix removed) -> mask path; ``<stem>_mask.*`` wins over ``<stem>.*``."""
    index: dict[str, str] = {}
    for p in list_images(folder):
        stem = _stem(p)
        if stem.endswith("_mask"):
            index[stem[:-len("_mask")]] = p
        else:
            index.setdefault(stem, p)
    return index


def read_mvtec(root, *, train: bool = True, test: bool = True) -> MVTecDataset:
    """List an MVTec-AD-style folder (see the module doc).

    ``train`` / ``test``: whether ``root/train/good`` / ``root/test`` must exist and hold
    images (a part that is not required is listed when present). Raises ValueError naming the
    root and what is missing; warns (UserWarning) for defective images without a mask in a
    defect type that has a ground_truth folder."""
    root_s = os.fspath(root)
    if not os.path.isdir(root_s):
        what = "not a folder" if os.path.exists(root_s) else "no such folder"
        raise ValueError(f"{root_s}: {what} (expected an MVTec-AD-style folder: {LAYOUT})")
    ds = MVTecDataset(root=root_s)
    good = _normal_dir(os.path.join(root_s, "train"))
    if good is not None:
        ds.train_good = list_images(good, recursive=True)
    if train and good is None:
        raise ValueError(f"{root_s}: not an MVTec-AD-style folder: no train/good sub-folder of normal "
                         f"training images (expected {LAYOUT})")
    if train and not ds.train_good:
        raise ValueError(f"{root_s}: train/good holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    test_dir = os.path.join(root_s, "test")
    if not os.path.isdir(test_dir):
        if test:
            raise ValueError(f"{root_s}: not an MVTec-AD-style folder: no test sub-folder "
                             f"(expected {LAYOUT})")
        return ds
    normal_dir = _normal_dir(test_dir)
    for p in ([] if normal_dir is None else list_images(normal_dir, recursive=True)):
        ds.test.append(MVTecEntry(p, 0, "good"))
    normal_name = None if normal_dir is None else os.path.basename(normal_dir)
    defects = sorted(d for d in os.listdir(test_dir) if d != normal_name and not d.startswith(".")
                     and os.path.isdir(os.path.join(test_dir, d)))
    missing: list[str] = []
    for d in defects:
        gt = os.path.join(root_s, "ground_truth", d)
        index = _mask_index(gt) if os.path.isdir(gt) else None
        for p in list_images(os.path.join(test_dir, d), recursive=True):
            mask = None if index is None else index.get(_stem(p))
            if index is not None and mask is None:
                missing.append(p)
            ds.test.append(MVTecEntry(p, 1, d, mask))
    if test and not ds.test:
        raise ValueError(f"{root_s}: test holds no image files (expected {LAYOUT})")
    if missing:
        warnings.warn(f"{root_s}: {len(missing)} defective test images have no mask in ground_truth "
                      f"(first: {missing[0]}; expected ground_truth/<defect>/<name>_mask.png); they are "
                      "left out of the pixel metrics", UserWarning, stacklevel=2)
    return ds


def read_mask(mask, size: tuple[int, int], *, name: str = "mask", image: str = "its image") -> np.ndarray:
    """A ground-truth mask as a bool (H, W) array of ``size`` = (H, W): True where the pixel is
    > 0 (any channel; alpha ignored; palette images by their colour).

    ``mask``: a file path, a PIL image, or a 2-D numpy array / torch tensor (bool or numbers).
    A mask of another size but the same aspect ratio (within 2 %) is resized with
    nearest-neighbour sampling; another aspect ratio is a ValueError naming ``name`` and
    ``image`` with both sizes."""
    from PIL import Image

    H, W = size
    if isinstance(mask, (str, os.PathLike)):
        from .ingest import ImageFileError, check_pixel_limit

        try:
            with Image.open(mask) as im:
                check_pixel_limit(im.size, os.fspath(mask))
                arr = _pil_mask(im)
        except ImageFileError:
            raise
        except (OSError, ValueError) as exc:
            raise ImageFileError(f"{name} ({os.fspath(mask)}): cannot read the mask ({exc})") from None
    elif isinstance(mask, Image.Image):
        arr = _pil_mask(mask)
    else:
        try:
            import torch

            if isinstance(mask, torch.Tensor):
                mask = mask.detach().cpu().numpy()
        except ImportError:  # pragma: no cover
            pass
        arr = np.asarray(mask)
        if arr.ndim != 2:
            raise ValueError(f"{name}: a mask must be 2-D (H, W), got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name}: a mask must be bool or numbers, got dtype {arr.dtype}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"{name}: the mask holds NaN or infinite values")
        arr = arr > 0
    h, w = arr.shape
    if (h, w) == (H, W):
        return arr
    if abs((h / w) / (H / W) - 1.0) > ASPECT_TOLERANCE:
        raise ValueError(f"{name} is {w}x{h} (W x H) but {image} is {W}x{H}: a mask must have its "
                         "image's size (or its aspect ratio, then it is resized)")
    rows = np.minimum((np.arange(H) + 0.5) * h / H, h - 1).astype(np.int64)
    cols = np.minimum((np.arange(W) + 0.5) * w / W, w - 1).astype(np.int64)
    return arr[rows[:, None], cols[None, :]]


def _pil_mask(im) -> np.ndarray:
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    arr = np.asarray(im)
    if arr.ndim == 3:
        channels = arr.shape[2]
        arr = arr[..., :3] if channels >= 3 else arr[..., :1]  # drop alpha (RGBA, LA)
        return (arr > 0).any(axis=2)
    return arr > 0
