"""Which files of a folder are images, and the folder layouts :mod:`anomgan.data.ingest` reads.

Only names are looked at here (no file is opened): an image file is a regular, non-hidden file
whose extension (case-insensitive) is one of :data:`IMAGE_EXTENSIONS`; hidden sub-folders are
skipped. Paths come back as ``str``, sorted, so a folder always reads in the same order.
"""
from __future__ import annotations

import os

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def list_images(folder: str | os.PathLike, *, recursive: bool = False) -> list[str]:
    """Sorted paths of the image files in ``folder`` (and its sub-folders when ``recursive``).

    Raises FileNotFoundError / NotADirectoryError naming the folder."""
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


def folder_images(folder: str | os.PathLike, *, recursive: bool = False) -> list[str]:
    """:func:`list_images`, and a ValueError naming the folder when it holds no image file."""
    paths = list_images(folder, recursive=recursive)
    if not paths:
        raise ValueError(f"{os.fspath(folder)}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def labelled_subfolders(root: str | os.PathLike, normal: str) -> tuple[str, list[str]]:
    """For a folder laid out as ``root/<normal>/*`` plus one sub-folder per anomaly class:
    (the normal sub-folder's path, the sorted names of the other non-hidden sub-folders holding
    at least one image file, searched recursively).

    Raises NotADirectoryError when ``root`` is not a folder, FileNotFoundError when it has no
    ``normal`` sub-folder."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root}: not a folder")
    normal_dir = os.path.join(root, normal)
    if not os.path.isdir(normal_dir):
        raise FileNotFoundError(f"{root}: no '{normal}' sub-folder of normal images")
    names = sorted(d for d in os.listdir(root) if d != normal and not d.startswith(".")
                   and os.path.isdir(os.path.join(root, d))
                   and list_images(os.path.join(root, d), recursive=True))
    return normal_dir, names
