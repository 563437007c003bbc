"""Which kernel backends work in this process, and how a call picks one.

Backends:
  ``torch``  the pure-PyTorch reference; always available, any device.
  ``cpp``    the compiled C++ extension (``anomgan._C``), CPU tensors.
  ``cuda``   the compiled CUDA kernels in the same extension, CUDA tensors; only when the
             extension was built with CUDA.
  ``triton`` the Triton kernels: CUDA tensors on a GPU, or CPU tensors when the process runs
             Triton's interpreter (``TRITON_INTERPRET=1``, set before anomgan is imported).

Choice: the ``backend=`` argument of an op, else the ``ANOMGAN_BACKEND`` environment variable,
else the fastest available for the tensor's device (CPU: cpp, then torch; CUDA: cuda, then
triton, then torch). Asking for one that cannot run raises ``BackendUnavailableError`` saying
what is missing; there is never a silent fallback.

Kernels: one table from (op, backend) to the callables that run it. Each op's module declares
its row once with :func:`register_kernels` (which returns the op's supported backends) and its
front looks the callables up with :func:`kernels`. The fake (meta) kernels of the compiled ops
are registered in one place, :mod:`anomgan.ops._fakes`.
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Callable

import torch

BACKENDS = ("torch", "cpp", "triton", "cuda")
_DEFAULT_ORDER = {"cpu": ("cpp", "torch"), "cuda": ("cuda", "triton", "torch")}


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot run here; the message says what is missing."""


@functools.lru_cache(maxsize=None)
def _extension():
    """(module, None) when anomgan._C imports, else (None, reason)."""
    try:
        mod = importlib.import_module("anomgan._C")
    except ImportError as exc:  # not built (e.g. running from a source tree)
        return None, f"the compiled extension anomgan._C did not import ({exc}); install with `pip install --no-build-isolation .`"
    return mod, None


def extension_built_with_cuda() -> bool:
    mod, _ = _extension()
    return bool(mod is not None and getattr(torch.ops.anomgan, "built_with_cuda", None) is not None
                and torch.ops.anomgan.built_with_cuda())


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _triton_import_error():
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"triton does not import ({exc})"
    return None


@torch._dynamo.assume_constant_result  # fixed for the process: torch.compile need not trace it
def why_unavailable(backend: str, device_type: str) -> str | None:
    """None when ``backend`` can run tensors of ``device_type`` here, else the reason."""
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}"
    if device_type == "cuda" and not torch.cuda.is_available():
        return "needs CUDA: no CUDA device is visible to torch in this process"
    if backend == "torch":
        return None
    if backend == "cpp":
        if device_type != "cpu":
            return f"the cpp backend runs CPU tensors only, got a {device_type} tensor"
        return _extension()[1]
    if backend == "cuda":
        if device_type != "cuda":
            return f"the cuda backend runs CUDA tensors only, got a {device_type} tensor"
        err = _extension()[1]
        if err:
            return err
        if not extension_built_with_cuda():
            return "anomgan._C was built without CUDA (rebuild with a CUDA torch and nvcc, or FORCE_CUDA=1)"
        return None
    # triton
    err = _triton_import_error()
    if err:
        return err
    if device_type == "cpu" and not triton_interpreting():
        return "triton runs CPU tensors only under its interpreter: set TRITON_INTERPRET=1 before importing anomgan"
    if device_type == "cuda" and not torch.cuda.is_available():
        return "triton needs a CUDA device"
    if device_type not in ("cpu", "cuda"):
        return f"triton does not run {device_type} tensors"
    return None


def available_backends(device: str | torch.device | None = None) -> list[str]:
    """Backends that work in this process.

    With ``device`` (``"cpu"``, ``"cuda"``, a torch.device): those that run tensors of that
    device type. Without: those that run on some device of this process (the CPU, plus CUDA
    when a GPU is visible).
    """
    if device is not None:
        types = [torch.device(device).type]
    else:
        types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [b for b in BACKENDS if any(why_unavailable(b, t) is None for t in types)]


def resolve_backend(backend: str | None, device: torch.device, op: str,
                    supported: tuple[str, ...] = BACKENDS) -> str:
    """The backend that runs ``op`` on ``device``: the explicit one, else ANOMGAN_BACKEND, else
    the fastest available. ``supported`` lists the backends that implement ``op``."""
    source = "backend="
    if backend is None:
        backend = os.environ.get("ANOMGAN_BACKEND") or None
        source = "ANOMGAN_BACKEND="
    if backend is not None:
        if not isinstance(backend, str):
            raise TypeError(f"{op}: backend must be a str or None, got {type(backend).__name__}")
        backend = backend.lower()
        reason = why_unavailable(backend, device.type)
        if reason is None and backend not in supported:
            reason = f"{op} has no {backend} implementation (it has: {', '.join(supported)})"
        if reason is not None:
            raise BackendUnavailableError(f"{op}: {source}{backend!r} is unavailable: {reason}")
        return backend
    for cand in _DEFAULT_ORDER.get(device.type, ("torch",)):
        if cand in supported and why_unavailable(cand, device.type) is None:
            return cand
    return "torch"


# ----------------------------------------------------------------------------- kernel table

# op -> backend -> kernel specs, in the order the op's front calls them (e.g. forward, backward)
_KERNELS: dict[str, dict[str, tuple[str, ...]]] = {}
_RESOLVED: dict[tuple[str, str], tuple[Callable, ...]] = {}


def register_kernels(op: str, *, cpp=None, cuda=None, triton=None) -> tuple[str, ...]:
    """Declare the kernels that run ``op`` on each compiled backend; returns the backends that
    implement it, "torch" (the reference, always) first, in ``BACKENDS`` order.

    Each of cpp, cuda, triton is one kernel spec or a tuple of them, in the order the op's front
    uses them, e.g. (forward, backward). A spec is ``"anomgan::<name>"`` for an op of the compiled
    extension (``torch.ops.anomgan.<name>``; the dispatcher picks its CPU or CUDA
    implementation) or ``"<module>:<function>"`` for a Python launcher (the Triton ones), whose
    module is imported on first use only.
    """
    given = {"cpp": cpp, "cuda": cuda, "triton": triton}
    row = {b: (s,) if isinstance(s, str) else tuple(s) for b, s in given.items() if s is not None}
    if _KERNELS.setdefault(op, row) != row:  # the same row again (a module reload) is fine
        raise ValueError(f"{op}: other kernels are already registered: {_KERNELS[op]}")
    return tuple(b for b in BACKENDS if b == "torch" or b in row)


def kernels(op: str, backend: str) -> tuple[Callable, ...]:
    """The callables that run ``op`` on ``backend`` (a compiled one: not "torch"), in the order
    given to :func:`register_kernels`. Call after :func:`resolve_backend` has chosen ``backend``."""
    got = _RESOLVED.get((op, backend))
    if got is None:
        try:
            specs = _KERNELS[op][backend]
        except KeyError:
            raise AssertionError(f"{op} registers no {backend} kernels") from None
        got = _RESOLVED[(op, backend)] = tuple(_resolve(s) for s in specs)
    return got


def _resolve(spec: str) -> Callable:
    if spec.startswith("anomgan::"):
        return getattr(torch.ops.anomgan, spec[len("anomgan::"):])
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def out_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the ops' float outputs (scores, maps, losses) for inputs of ``dtype``: float64
    for float64, else float32 (float16/bfloat16 inputs are accumulated and returned in float32)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
