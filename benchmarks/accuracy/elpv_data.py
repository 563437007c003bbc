"""ELPV solar cells (Buerhop-Lutz et al. 2018; Deitsch et al. 2019): the split of the protocol.

Data: ``pip install elpv-dataset==1.0.0.post1`` (CC BY-NC-SA 4.0: installed at benchmark time,
never committed or shipped). 2,624 electroluminescence images of single cells, 300x300 8-bit
grayscale, from 44 modules; labels.csv gives, per file, a defect probability in
{0, 1/3, 2/3, 1} and the module type (mono / poly). There is no module id, so cells of one
module can fall on both sides of the split.

Protocol (:func:`split`): cells labelled 1/3 and 2/3 are dropped (1,508 normal, 715 defective
remain). Per type (stratified), a seeded permutation puts
  * ``test``: 20 % of the normals and as many defects (the same number per type);
  * ``val``: 10 % of the normals and ``VAL_DEFECT_FRACTION`` of the defects;
  * ``train``: the other normals; the other defects form ``train_defects``, the pool from which
    a method that takes labelled defects may get up to 100 (the first N of this seeded order).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

VAL_DEFECT_FRACTION = 0.07
TEST_NORMAL_FRACTION = 0.20
VAL_NORMAL_FRACTION = 0.10
MAX_LABELLED_DEFECTS = 100


def data_dir() -> str:
    """The installed dataset's ``data`` folder; ImportError with the install command if absent."""
    try:
        import elpv_dataset
    except ImportError:
        raise ImportError("the ELPV benchmark needs the dataset: pip install elpv-dataset==1.0.0.post1 "
                          "(CC BY-NC-SA 4.0; do not commit its images)") from None
    return os.path.join(os.path.dirname(elpv_dataset.__file__), "data")


@dataclass
class Cell:
    path: str
    defect: int  # 1 = defect probability 1, 0 = probability 0
    kind: str  # "mono" | "poly"


def read_labels(root: str | None = None) -> list[Cell]:
    """Every cell with probability 0 or 1 (the 1/3 and 2/3 ones are dropped), in file order."""
    root = root or data_dir()
    cells = []
    with open(os.path.join(root, "labels.csv")) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                continue
            rel, prob, kind = parts
            p = float(prob)
            if p in (0.0, 1.0):
                cells.append(Cell(os.path.join(root, rel), int(p == 1.0), kind))
    return cells


def split(seed: int, root: str | None = None) -> dict[str, list[Cell]]:
    """``{"train", "train_defects", "val", "test"}`` (see the module doc), seeded, per type."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Cell]] = {"train": [], "train_defects": [], "val": [], "test": []}
    cells = read_labels(root)
    for kind in sorted({c.kind for c in cells}):
        normal = [c for c in cells if c.kind == kind and not c.defect]
        defect = [c for c in cells if c.kind == kind and c.defect]
        normal = [normal[i] for i in rng.permutation(len(normal))]
        defect = [defect[i] for i in rng.permutation(len(defect))]
        n_test = int(round(TEST_NORMAL_FRACTION * len(normal)))
        n_val = int(round(VAL_NORMAL_FRACTION * len(normal)))
        d_test = min(n_test, len(defect) // 2)
        d_val = int(round(VAL_DEFECT_FRACTION * len(defect)))
        out["test"] += normal[:n_test] + defect[:d_test]
        out["val"] += normal[n_test:n_test + n_val] + defect[d_test:d_test + d_val]
        out["train"] += normal[n_test + n_val:]
        out["train_defects"] += defect[d_test + d_val:]
    # one seeded order of the defect pool across types, so "the first N" mixes both types
    pool = out["train_defects"]
    out["train_defects"] = [pool[i] for i in rng.permutation(len(pool))]
    return out


def paths(cells: list[Cell]) -> list[str]:
    return [c.path for c in cells]


def labels(cells: list[Cell]) -> np.ndarray:
    return np.array([c.defect for c in cells], dtype=np.int64)


def kinds(cells: list[Cell]) -> np.ndarray:
    return np.array([c.kind for c in cells])
