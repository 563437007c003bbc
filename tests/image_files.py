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
