"""Argument validation for the whole package: one place for each rule, one wording for each
error.

Every check takes ``where`` (the function or class the user called, e.g. ``"detect"``) and
``name`` (the argument), and raises ``TypeError`` when the value has the wrong type or
``ValueError`` when it is out of range; both messages name the argument, what it got and what it
expects. Checks return the value normalised (``int``/``float``), so callers can write
``steps = check_int("fit", "steps", steps, minimum=1)``. ``bool`` is never accepted as a number.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Iterable

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _range_text(lo, hi, lo_open=False, hi_open=False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def check_int(where: str, name: str, v, minimum: int | None = None,
              maximum: int | None = None, *, allow_none: bool = False) -> int | None:
    """An int (Python or numpy integer, not bool) in [minimum, maximum]; None if allow_none."""
    if v is None and allow_none:
        return None
    want = " ".join(filter(None, ["an int", _range_text(minimum, maximum)]))
    if allow_none:
        want = f"None or {want}"
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{where}: {name} must be {want}, got {type(v).__name__} {v!r}")
    v = int(v)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise ValueError(f"{where}: {name} must be {want}, got {v}")
    return v


def check_real(where: str, name: str, v, lo: float | None = None, hi: float | None = None, *,
               lo_open: bool = False, hi_open: bool = False, finite: bool = True,
               allow_none: bool = False) -> float | None:
    """A real number (not bool, not NaN; finite unless ``finite=False``) in the range given by
    lo/hi (closed unless lo_open/hi_open); None if allow_none."""
    if v is None and allow_none:
        return None
    rng = _range_text(lo, hi, lo_open, hi_open)
    want = " ".join(filter(None, ["a finite number" if finite else "a number", rng]))
    if allow_none:
        want = f"None or {want}"
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{where}: {name} must be {want}, got {type(v).__name__} {v!r}")
    v = float(v)
    bad = (math.isnan(v) or (finite and math.isinf(v))
           or (lo is not None and (v <= lo if lo_open else v < lo))
           or (hi is not None and (v >= hi if hi_open else v > hi)))
    if bad:
        raise ValueError(f"{where}: {name} must be {want}, got {v}")
    return v


def check_known_settings(where: str, given: Iterable[str], known: Iterable[str]) -> None:
    """ValueError naming the settings in ``given`` that are not in ``known`` (and the known ones)."""
    known = set(known)
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")


def settings_from_any(where: str, cls, v):
    """An optional component's settings dataclass ``cls`` from what a user passes: None/False
    (none: returns None), True (the defaults), a dict of settings (unknown names refused) or an
    instance of ``cls``; anything else is a TypeError."""
    if v is None or v is False:
        return None
    if v is True:
        return cls()
    if isinstance(v, cls):
        return v
    if isinstance(v, dict):
        check_known_settings(where, v, (f.name for f in dataclasses.fields(cls)))
        return cls(**v)
    raise TypeError(f"{where} must be None, a bool, a dict of settings or a {cls.__name__}, "
                    f"got {type(v).__name__}")


def check_choice(where: str, name: str, v, choices: Iterable):
    """One of ``choices`` (compared with ==)."""
    choices = tuple(choices)
    if v not in choices:
        raise ValueError(f"{where}: {name} must be one of {', '.join(repr(c) for c in choices)}, "
                         f"got {v!r}")
    return v


def check_channels(where: str, channels, *, allow_none: bool = False) -> int | None:
    """``channels`` as an int, 1 or 3 (or None when ``allow_none``): the image channels every
    part of the package accepts (grey or RGB)."""
    channels = check_int(where, "channels", channels, allow_none=allow_none)
    if channels is not None:
        check_choice(where, "channels", channels, (1, 3))
    return channels


def check_tensor(op: str, name: str, t, ndim: int | None = None, min_ndim: int | None = None) -> None:
    """A float tensor (see FLOAT_DTYPES) with ``ndim`` (or at least ``min_ndim``) dimensions."""
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
    """Two tensors on one device, of one dtype (and, with ``shape``, one shape)."""
    if a.device != b.device:
        raise ValueError(f"{op}: {a_name} and {b_name} must be on the same device, "
                         f"got {a.device} and {b.device}")
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: {a_name} and {b_name} must have the same dtype, "
                        f"got {a.dtype} and {b.dtype}")
    if shape and a.shape != b.shape:
        raise ValueError(f"{op}: {a_name} and {b_name} must have the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
