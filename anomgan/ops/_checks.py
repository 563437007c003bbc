"""Input validation shared by the ops: one place, run before any kernel touches memory."""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_tensor(op: str, name: str, t, ndim: int | None = None, min_ndim: int | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}: {name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if min_ndim is not None and t.dim() < min_ndim:
        raise ValueError(
            f"{op}: {name} must have at least {min_ndim} dimension(s), got shape {tuple(t.shape)}")


def check_same(op: str, a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor,
               shape: bool = True) -> None:
    if a.device != b.device:
        raise ValueError(f"{op}: {a_name} and {b_name} must be on the same device, "
                         f"got {a.device} and {b.device}")
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: {a_name} and {b_name} must have the same dtype, "
                        f"got {a.dtype} and {b.dtype}")
    if shape and a.shape != b.shape:
        raise ValueError(f"{op}: {a_name} and {b_name} must have the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


def check_int(op: str, name: str, v, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__} {v!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {v}")
    return v


def check_real(op: str, name: str, v, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{op}: {name} must be a real number, got {type(v).__name__} {v!r}")
    v = float(v)
    if v != v or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ValueError(f"{op}: {name} must be in {rng}, got {v}")
    return v
