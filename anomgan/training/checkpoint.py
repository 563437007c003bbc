"""fit's checkpoints: what one holds, how it is written (:class:`_Checkpointer`) and read back
(:func:`load_checkpoint`, :meth:`TrainingState.restore`), and the RNG states they carry.

A checkpoint is a bundle (:mod:`anomgan.fileio`) of kind ``"checkpoint"``: the nested training
state (:mod:`anomgan.training.state` turns it into tensors plus JSON) and the run's ``config``
(:meth:`anomgan.training.config.FitConfig.checkpoint_config`). The state holds the method's
state_dict, the current stage's optimizer states, the samplers' positions, the RNG states (torch
CPU and CUDA, numpy, Python, the augmentation generator) and the stage / step counters.
"""
from __future__ import annotations

import dataclasses
import os
import random
from typing import Any

import numpy as np
import torch

from .. import fileio
from . import distributed as dd
from .state import decode, encode

CHECKPOINT_KIND = "checkpoint"
CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "last.ckpt"


def checkpoint_file(path: str | os.PathLike) -> str:
    """``path`` itself, or ``path/last.ckpt`` when ``path`` is a checkpoint_dir."""
    path = os.fspath(path)
    return os.path.join(path, CHECKPOINT_NAME) if os.path.isdir(path) else path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """(state, meta) of a checkpoint written by :func:`fit` (nested state with tensors)."""
    tensors, meta, _ = fileio.load_bundle(checkpoint_file(path), kind=CHECKPOINT_KIND,
                                          max_format_version=CHECKPOINT_FORMAT)
    return decode(meta["state"], tensors), meta


# ---- global RNGs ------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """The global RNG states: torch CPU, numpy, Python (and CUDA once initialised)."""
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(legacy=False), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA only on as many devices as it saved)."""
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available():
        cuda = list(st["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def seed_all(seed: int) -> None:
    """Seed torch's, numpy's and Python's global RNGs."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    random.seed(seed)


# ---- the state a checkpoint saves ---------------------------------------------------------------
@dataclasses.dataclass
class TrainingState:
    """The objects whose state a checkpoint carries besides the optimizers and counters: the
    method, the batch samplers (``"normal"`` and, with anomalous images, ``"anomalous"``) and
    the augmentation generator (the global RNGs come along)."""
    model: torch.nn.Module
    samplers: dict[str, Any]
    aug_gen: torch.Generator
    #: seconds of training so far (over resumes): what a time budget counts
    elapsed: float = 0.0

    def snapshot(self, optimizers: dict[str, torch.optim.Optimizer], stage: str, stage_index: int,
                 stage_step: int, step: int) -> dict:
        """The nested state of a checkpoint after global step ``step`` = step ``stage_step`` of
        stage #``stage_index`` (``stage``), with ``optimizers`` (that stage's)."""
        return {"method": self.model.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "samplers": {k: s.state_dict() for k, s in self.samplers.items()},
                "rng": {**rng_state(), "augment": self.aug_gen.get_state()},
                "stage": stage, "stage_index": stage_index, "stage_step": stage_step, "step": step,
                "elapsed": float(self.elapsed)}

    def restore(self, state: dict) -> None:
        """Load a :meth:`snapshot`'s method, samplers and RNG states (not the optimizers: they
        are made per stage, see fit)."""
        self.model.load_state_dict(state["method"])
        for k, s in self.samplers.items():
            s.load_state_dict(state["samplers"][k])
        self.aug_gen.set_state(state["rng"]["augment"])
        self.elapsed = float(state.get("elapsed", 0.0))  # checkpoints before time budgets: 0
        set_rng_state(state["rng"])


class _Checkpointer:
    """Writes ``checkpoint_dir/last.ckpt`` atomically (rank 0 only; nothing without a
    checkpoint_dir) with the run's stored ``config``. Under multi-process training every rank
    calls :meth:`save` (BatchNorm buffers are averaged across ranks first). ``last``: the path
    of the last checkpoint written, or the resumed-from one until then (None if neither)."""

    def __init__(self, checkpoint_dir: str | None, state: TrainingState, config: dict, info: dd.DistInfo,
                 resumed_from: str | None = None):
        self.path = os.path.join(checkpoint_dir, CHECKPOINT_NAME) if checkpoint_dir is not None else None
        self.state, self.config, self.info = state, config, info
        self.last = checkpoint_file(resumed_from) if resumed_from is not None else None

    def save(self, optimizers: dict[str, torch.optim.Optimizer], stage: str, stage_index: int, stage_step: int,
             step: int) -> None:
        """Checkpoint the state after global step ``step`` (see :meth:`TrainingState.snapshot`)."""
        if self.info.enabled:
            dd.average_buffers(self.state.model)
        if self.path is None or not self.info.is_main:
            return
        tensors: dict[str, torch.Tensor] = {}
        doc = encode(self.state.snapshot(optimizers, stage, stage_index, stage_step, step), tensors, "s")
        fileio.save_bundle(self.path, tensors, {"state": doc, "config": self.config}, kind=CHECKPOINT_KIND,
                           format_version=CHECKPOINT_FORMAT)
        self.last = self.path
