"""Folders of small grayscale PNGs for the CLI and README tests."""
import os

import numpy as np
from PIL import Image


def write_pngs(folder, names, seed, size=16, spot=False):
    """Write uint8 noise images (values 100-160) into ``folder`` (created); ``names`` is a list
    of file names or a count (img00.png, img01.png, ...). ``spot``: a bright 5x5 square
    (value 250) at rows 4-8, columns 5-9, the planted defect. Returns the folder as a str."""
    os.makedirs(folder, exist_ok=True)
    if isinstance(names, int):
        names = [f"img{i:02d}.png" for i in range(names)]
    rng = np.random.default_rng(seed)
    for name in names:
        a = (rng.random((size, size)) * 60 + 100).astype(np.uint8)
        if spot:
            a[4:9, 5:10] = 250
        Image.fromarray(a).save(os.path.join(folder, name))
    return str(folder)


def write_mvtec(root, size=16):
    """A small MVTec-AD-style tree under ``root``: train/good (8 images), test/good (3),
    test/spot (3, with the planted spot of :func:`write_pngs`) and ground_truth/spot/imgNN_mask.png
    marking exactly the spot. Returns the root as a str."""
    write_pngs(os.path.join(root, "train", "good"), 8, 10, size=size)
    write_pngs(os.path.join(root, "test", "good"), 3, 11, size=size)
    write_pngs(os.path.join(root, "test", "spot"), 3, 12, size=size, spot=True)
    os.makedirs(os.path.join(root, "ground_truth", "spot"), exist_ok=True)
    mask = np.zeros((size, size), np.uint8)
    mask[4:9, 5:10] = 255
    for i in range(3):
        Image.fromarray(mask).save(os.path.join(root, "ground_truth", "spot", f"img{i:02d}_mask.png"))
    return str(root)
