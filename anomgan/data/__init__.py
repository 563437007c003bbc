"""Images in, float32 (N, C, H, W) tensors in [0, 1] out; samplers and augmentations for training.

* :func:`as_images` (training) and :func:`to_batch` (detection) — one ingestion policy for numpy /
  torch arrays, PIL images, image files and folders (:mod:`anomgan.data.ingest` states it);
  :func:`to_images`, :func:`load_images`, :func:`load_folder`, :func:`load_labelled_folder` are
  :func:`as_images` for one kind of source;
* :func:`load_mnist`, :func:`read_idx`, :func:`one_class_split` — MNIST-style benchmarks;
* :class:`EpochBatchSampler`, :class:`KMeansBalancedSampler` — seeded, resumable batch streams;
* :class:`Augment` — the papers' flips, 90-degree rotations and small crops.
"""
from .augment import Augment
from .folder import IMAGE_EXTENSIONS, list_images
from .ingest import (LUMA, ImageFileError, as_images, check_channels, load_folder, load_images,
                     load_labelled_folder, rgb_to_gray, to_batch, to_images)
from .kmeans import KMeansBalancedSampler
from .mnist import load_mnist, load_mnist_arrays, one_class_split, read_idx, write_idx
from .samplers import EpochBatchSampler

__all__ = ["Augment", "IMAGE_EXTENSIONS", "ImageFileError", "LUMA", "as_images", "check_channels",
           "list_images", "load_folder", "load_images", "load_labelled_folder", "rgb_to_gray",
           "to_batch", "to_images", "KMeansBalancedSampler", "load_mnist", "load_mnist_arrays",
           "one_class_split", "read_idx", "write_idx", "EpochBatchSampler"]
