"""Output allocation shared by the Python-launched kernels (Triton), and the switch that
poisons every kernel output (C++, CUDA and Triton) in tests: floats start as NaN, integers as
a sentinel, so an element a kernel forgets to write cannot pass unnoticed."""
from __future__ import annotations

import contextlib

import torch

from . import _backends

POISON_INT = -1234567891
_python_flag = False


def set_poison_outputs(on: bool) -> bool:
    """Switch poisoning on or off for every backend; returns the previous setting."""
    global _python_flag
    prev = _python_flag
    _python_flag = bool(on)
    if _backends._extension()[0] is not None:
        torch.ops.anomgan.set_poison_outputs(bool(on))
    return prev


@contextlib.contextmanager
def poisoned_outputs():
    """Poison every backend's outputs inside the block, then restore the previous setting."""
    prev = set_poison_outputs(True)
    try:
        yield
    finally:
        set_poison_outputs(prev)


def new_output(shape, *, dtype, device) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtype, device=device)
    if _python_flag:
        t.fill_(float("nan") if t.dtype.is_floating_point else POISON_INT)
    return t
