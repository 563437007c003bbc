"""Files users care about: written atomically, read without ever unpickling.

A *bundle* is one safetensors file: named tensors plus a JSON document stored in the
safetensors header metadata (key ``anomgan``), with a ``kind`` ("detector", "checkpoint", ...)
and a ``format_version``. Checkpoints and detectors are bundles.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import json
import os
import re
import secrets
from typing import Any, Iterator

import torch

META_KEY = "anomgan"


class BundleError(ValueError):
    """The file is missing, truncated, corrupted, of another kind or of a newer format."""


class WriteError(OSError):
    """Writing a file failed (e.g. the disk is full: ``errno`` ENOSPC); the message names the
    file and says that its previous version (if any) is intact (writes are atomic) and that no
    temporary file is left behind."""

    def __init__(self, path: str, cause: BaseException, existed: bool):
        code = getattr(cause, "errno", None)
        reason = "the disk is full" if code in (_errno.ENOSPC, _errno.EDQUOT) else "the write failed"
        kept = f"the previous {path} is intact" if existed else f"{path} was not created"
        self.message = f"{path}: cannot write it, {reason} ({cause}); {kept}"
        super().__init__(self.message)
        self.errno, self.filename = code, path

    def __str__(self) -> str:
        return self.message


def _temp_prefix(name: str) -> str:
    return f".tmp-{name}."


def _remove_stale_temps(directory: str, name: str, own: str, created: float) -> None:
    """Remove ``.tmp-<name>.<hex>`` files beside ``name`` left by writes that were killed (e.g.
    ``kill -9``), i.e. those last modified before this write's own temporary file ``own`` was
    created at ``created`` (a concurrent write of the same file started later keeps its own)."""
    pattern = re.compile(re.escape(_temp_prefix(name)) + r"[0-9a-f]{12}")
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.path != own and pattern.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime_ns < created:
                        os.unlink(entry.path)


def _new_temp_file(directory: str, name: str) -> str:
    """Create an empty, unique temporary file beside ``name`` with mode 0o666 less the umask
    (the kernel applies the umask, as for ``open(path, "w")``; mkstemp would give 0o600)."""
    for _ in range(100):
        tmp = os.path.join(directory, f"{_temp_prefix(name)}{secrets.token_hex(6)}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {os.path.join(directory, name)}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename
    (after fsync) with the permissions ``open(path, "w")`` would give (an existing file's, else
    0o666 less the umask) and the temporary files of earlier killed writes of ``path`` are
    removed; on error it is removed and ``path`` is left as it was. An OSError while writing or
    renaming (e.g. a full disk) comes out as :class:`WriteError` naming ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = _new_temp_file(directory, os.path.basename(path))
    created = os.stat(tmp).st_mtime_ns
    existed = os.path.exists(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        with contextlib.suppress(FileNotFoundError):  # a replaced file keeps its permissions
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(path, exc, existed) from exc
        raise
    _remove_stale_temps(directory, os.path.basename(path), tmp, created)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_bundle(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                *, kind: str, format_version: int) -> None:
    """Write ``tensors`` and the JSON-able ``meta`` as one safetensors file, atomically."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    doc = {"kind": kind, "format_version": int(format_version), "meta": meta}
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(flat, tmp, metadata={META_KEY: json.dumps(doc)})
        except SafetensorError as exc:  # an I/O error of the Rust writer: "Os { code: 28, ..." / "(os error 28)"
            code = re.search(r"\bos error (\d+)|\bOs \{ code: (\d+)", str(exc))
            if code is None:
                raise
            raise OSError(int(code.group(1) or code.group(2)), str(exc)) from exc


def load_bundle(path: str | os.PathLike, *, kind: str, max_format_version: int,
                device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any], int]:
    """(tensors, meta, format_version) of a bundle written by :func:`save_bundle`.

    Raises BundleError naming the file when it is missing, not a safetensors file, truncated or
    corrupted, not an anomgan bundle, of another kind, or of a format newer than
    ``max_format_version``. Nothing is unpickled."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BundleError(f"{path}: no such file")
    try:
        with safe_open(path, framework="pt", device=str(device)) as fh:
            header = fh.metadata() or {}
            raw = header.get(META_KEY)
            if raw is None:
                raise BundleError(f"{path}: a safetensors file, but not an anomgan {kind} "
                                  "(no anomgan metadata)")
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise BundleError(f"{path}: corrupted anomgan metadata ({exc})") from None
            if not isinstance(doc, dict) or doc.get("kind") != kind:
                got = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
                raise BundleError(f"{path}: an anomgan {got!r} file, expected a {kind!r}")
            version = doc.get("format_version")
            if not isinstance(version, int) or version < 1:
                raise BundleError(f"{path}: invalid format_version {version!r}")
            if version > max_format_version:
                raise BundleError(f"{path}: {kind} format version {version} is newer than this "
                                  f"anomgan reads (<= {max_format_version}); upgrade anomgan")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except BundleError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{path}: not a readable anomgan {kind} (truncated or corrupted? {exc})") from None
    meta = doc.get("meta")
    if not isinstance(meta, dict):
        raise BundleError(f"{path}: corrupted anomgan metadata (meta is {type(meta).__name__})")
    return tensors, meta, version
