"""Detectors as standalone model files that run without anomgan (see :mod:`anomgan.export.onnx`
for the ONNX contract: inputs, outputs, metadata keys).

``export(detector, path, format="onnx")`` is what ``Detector.export`` and ``anomgan export``
call. The formats need optional packages (``pip install anomgan[export]``: onnx; onnxruntime
to run the file), imported only here, on use.
"""
from __future__ import annotations

import os

from .._validate import check_choice

__all__ = ["FORMATS", "export"]

FORMATS = ("onnx",)


def export(detector, path: str | os.PathLike, format: str = "onnx") -> None:
    """Write ``detector`` to ``path`` in ``format`` (one of :data:`FORMATS`), atomically.
    ValueError for an unknown format or a method that has no exportable graph (the latent-search
    methods), before any work; see the format's module for the rest."""
    if not isinstance(format, str):
        raise TypeError(f"export: format must be a str, got {type(format).__name__}")
    check_choice("export", "format", format.lower(), FORMATS)
    from .onnx import export_onnx

    export_onnx(detector, path)
