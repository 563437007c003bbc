"""Nested training state <-> (flat tensors, JSON document), so checkpoints need no pickle.

:func:`encode` walks dicts, lists, tuples, tensors, numpy arrays and JSON scalars; every tensor
(or numpy array) is moved into the flat ``tensors`` dict under a generated key and replaced by
``{"__tensor__": key}`` (``{"__ndarray__": key, "dtype": ...}``); dicts with non-string keys
(optimizer states are keyed by int) become ``{"__dict__": [[key, value], ...]}`` and tuples
``{"__tuple__": [...]}``. :func:`decode` inverts it exactly (tensor dtypes and shapes, int
keys, tuples). Anything else raises TypeError naming its path in the structure.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

_TAGS = ("__tensor__", "__ndarray__", "__dict__", "__tuple__", "__float__")


def encode(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """JSON-able form of ``obj``; its tensors are added to ``tensors`` under ``prefix...``."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}#{len(tensors)}"
        tensors[key] = obj.detach().cpu().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"{prefix}#{len(tensors)}"
        arr = np.ascontiguousarray(obj)
        kind = str(arr.dtype)
        if arr.dtype in (np.uint32, np.uint16):
            arr = arr.astype(np.int64)
        tensors[key] = torch.from_numpy(arr.copy())
        return {"__ndarray__": key, "dtype": kind}
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in obj):
            return {k: encode(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        return {"__dict__": [[encode(k, tensors, f"{prefix}.key"), encode(v, tensors, f"{prefix}.{k}")]
                             for k, v in obj.items()]}
    raise TypeError(f"cannot store {prefix} of type {type(obj).__name__} in a checkpoint")


def decode(doc: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode`; ValueError when a referenced tensor is missing."""
    if isinstance(doc, list):
        return [decode(v, tensors) for v in doc]
    if not isinstance(doc, dict):
        return doc
    if "__tensor__" in doc or "__ndarray__" in doc:
        key = doc.get("__tensor__", doc.get("__ndarray__"))
        if key not in tensors:
            raise ValueError(f"checkpoint is missing tensor {key!r}")
        t = tensors[key]
        if "__ndarray__" in doc:
            return t.numpy().astype(np.dtype(doc["dtype"]))
        return t
    if "__tuple__" in doc:
        return tuple(decode(v, tensors) for v in doc["__tuple__"])
    if "__dict__" in doc:
        return {_hashable(decode(k, tensors)): decode(v, tensors) for k, v in doc["__dict__"]}
    if "__float__" in doc:
        return float(doc["__float__"])
    return {k: decode(v, tensors) for k, v in doc.items()}


def _hashable(k: Any) -> Any:
    return tuple(_hashable(v) for v in k) if isinstance(k, (list, tuple)) else k
