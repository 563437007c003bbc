"""The standard MNIST-style benchmark files: an ``.npz`` with ``x_train``, ``y_train``,
``x_test``, ``y_test`` (as /work/shared/data/mnist.npz), or the original IDX files (optionally
gzipped), e.g. MNIST's or Fashion-MNIST's ``train-images-idx3-ubyte.gz``.
"""
from __future__ import annotations

import gzip
import os
from typing import Any, Sequence

import numpy as np
import torch

from .ingest import to_images

# IDX type codes (LeCun's format): code -> big-endian numpy dtype
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (``.gz`` is decompressed) into a native-endian numpy array.

    Raises ValueError naming the file when the header is not IDX or the data is truncated."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    head = 4 + 4 * ndim
    if len(data) < head:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - head != count * dtype.itemsize:
        raise ValueError(f"{path}: IDX data holds {len(data) - head} bytes, the header {shape} "
                         f"of {dtype} asks for {count * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype, offset=head).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends in .gz), atomically."""
    from ..fileio import atomic_write_bytes

    code = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}.get(np.dtype(array.dtype).newbyteorder("="))
    if code is None:
        raise TypeError(f"array: dtype {array.dtype} has no IDX code")
    head = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = head + np.ascontiguousarray(array).astype(_IDX_DTYPES[code]).tobytes()
    atomic_write_bytes(path, gzip.compress(raw, mtime=0) if os.fspath(path).endswith(".gz") else raw)


def _find_idx(folder: str, stem: str) -> str:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(folder, cand)
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(f"{folder}: no {stem}[.gz] IDX file")


def load_mnist_arrays(path: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W), labels int64 (N,)) of ``split`` ("train", "test" or "all") from
    an ``.npz`` file or a folder of IDX files."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if split == "all":
        a = load_mnist_arrays(path, "train")
        b = load_mnist_arrays(path, "test")
        return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])
    path = os.fspath(path)
    if os.path.isdir(path):
        img_stem, lab_stem = _IDX_NAMES[split]
        x, y = read_idx(_find_idx(path, img_stem)), read_idx(_find_idx(path, lab_stem))
        src = path
    elif os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in (f"x_{split}", f"y_{split}") if k not in z.files]
                if missing:
                    raise ValueError(f"{path}: no {', '.join(missing)} array (has {', '.join(z.files)})")
                x, y = z[f"x_{split}"], z[f"y_{split}"]
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
        src = path
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{src}: expected images (N, H, W) and labels (N,), got {x.shape} and {y.shape}")
    return x, y.astype(np.int64)


def load_mnist(path: str | os.PathLike, split: str = "train", *, image_size: Any = None,
               channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 (N, C, H, W) in [0, 1], labels int64 (N,)); see :func:`load_mnist_arrays`.
    ``image_size`` resizes (the papers use 32 for MNIST / Fashion-MNIST)."""
    x, y = load_mnist_arrays(path, split)
    return to_images(x, image_size=image_size, channels=channels, name=os.fspath(path)), torch.from_numpy(y)


def one_class_split(images: torch.Tensor, labels: torch.Tensor, normal: int | Sequence[int]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The benchmarks' protocol: images whose label is in ``normal`` are normal, the rest
    anomalous. Returns (normal images, anomalous images, the anomalous images' labels)."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    normal = [normal] if isinstance(normal, (int, np.integer)) else list(normal)
    is_normal = torch.isin(labels, torch.tensor(normal, dtype=labels.dtype))
    if not bool(is_normal.any()):
        raise ValueError(f"normal: no image has label {normal}")
    return images[is_normal], images[~is_normal], labels[~is_normal]
