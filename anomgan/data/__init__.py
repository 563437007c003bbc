"""Images in, float32 (N, C, H, W) tensors in [0, 1] out; samplers and augmentations for training.

* :func:`to_images` — numpy / torch arrays (uint8, uint16, bool, float) of any layout;
* :func:`load_folder`, :func:`load_images`, :func:`load_labelled_folder` — image files via Pillow;
* :func:`load_mnist`, :func:`read_idx`, :func:`one_class_split` — MNIST-style benchmarks;
* :class:`EpochBatchSampler`, :class:`KMeansBalancedSampler` — seeded, resumable batch streams;
* :class:`Augment` — the papers' flips, 90-degree rotations and small crops.
"""
from .augment import Augment
from .folder import IMAGE_EXTENSIONS, ImageFileError, list_images, load_folder, load_images, load_labelled_folder
from .images import to_images
from .kmeans import KMeansBalancedSampler
from .mnist import load_mnist, load_mnist_arrays, one_class_split, read_idx, write_idx
from .samplers import EpochBatchSampler

__all__ = ["Augment", "IMAGE_EXTENSIONS", "ImageFileError", "list_images", "load_folder", "load_images",
           "load_labelled_folder", "to_images", "KMeansBalancedSampler", "load_mnist", "load_mnist_arrays",
           "one_class_split", "read_idx", "write_idx", "EpochBatchSampler", "as_images"]


def as_images(source, *, image_size=None, channels=None, on_error: str = "raise", name: str = "images"):
    """Any supported source -> float32 (N, C, H, W) in [0, 1]: a folder path, a list of paths
    or PIL images, a single PIL image, or a numpy array / torch tensor."""
    import os

    import numpy as np
    import torch

    if isinstance(source, (str, os.PathLike)):
        if os.path.isdir(source):
            return load_folder(source, image_size=image_size, channels=channels, on_error=on_error)
        return load_images([source], image_size=image_size, channels=channels, on_error=on_error)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return to_images(source, image_size=image_size, channels=channels, name=name)
    if hasattr(source, "mode") and hasattr(source, "getdata"):
        return load_images([source], image_size=image_size, channels=channels, on_error=on_error)
    if isinstance(source, (list, tuple)):
        if source and all(isinstance(s, (np.ndarray, torch.Tensor)) for s in source):
            return torch.cat([to_images(s[None] if s.ndim == 3 else s, image_size=image_size,
                                        channels=channels, name=f"{name}[{i}]") for i, s in enumerate(source)])
        return load_images(source, image_size=image_size, channels=channels, on_error=on_error)
    raise TypeError(f"{name}: expected a folder, path(s), PIL image(s), a numpy array or a torch tensor, "
                    f"got {type(source).__name__}")
