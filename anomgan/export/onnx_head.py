"""ONNX export of a detector's defect head (:mod:`anomgan.scoring.defect_head`), beside the
method's file.

A detector trained with ``defect_head`` exports to two files: the method's graph at ``path``
(:mod:`anomgan.export.onnx`; its ``scores`` output is then the method's own score, *before*
fusion) and the head's graph at :func:`head_path` (``model.onnx`` -> ``model.head.onnx``):

Input   ``head_input``: float32 (N, 2, S_h, S_h), N dynamic: [2 x - 1, 4 clamp(r, 0, 1)], x the
        image (channel mean, [0, 1]) and r the detector's map (the blended map of a tiled
        image), both area-resized (adaptive average pooling) to S_h x S_h.
Output  ``logits``: float32 (N,), the members' mean logit.

The method file's metadata ``anomgan.defect_head`` (JSON; null without a head) holds ``file``
(the head file's name, beside it), ``size`` (S_h), ``weight`` (w) and ``fusion`` ({score_mean,
score_std, logit_mean, logit_std}); the fused score, which ``anomgan.threshold`` applies to, is
``(score - score_mean) / score_std + w (logit - logit_mean) / logit_std``. The README's
"score_fused.py" recipe does it with numpy, tested against ``anomgan.detect``.
"""
from __future__ import annotations

import io
import os
import warnings

import torch

INPUT, OUTPUT = "head_input", "logits"

__all__ = ["head_path", "head_metadata", "head_onnx_bytes"]


def beside(path: str, part: str) -> str:
    """The file of ``part`` beside the method file ``path`` (``x.onnx`` -> ``x.<part>.onnx``)."""
    root, ext = os.path.splitext(path)
    return f"{root if ext.lower() == '.onnx' else path}.{part}.onnx"


def head_path(path: str) -> str:
    """The head file beside the method file ``path`` (``x.onnx`` -> ``x.head.onnx``)."""
    return beside(path, "head")


def head_metadata(detector, path: str) -> dict | None:
    """The ``anomgan.defect_head`` value (see the module doc), or None without a head."""
    head = getattr(detector, "head", None)
    if head is None:
        return None
    return {"file": os.path.basename(head_path(path)), "size": head.config.size,
            "members": head.config.members, "weight": head.config.weight,
            "fusion": dict(head.fusion)}


def head_onnx_bytes(detector, opset: int) -> bytes:
    """The serialized ONNX model of ``detector.head`` (see the module doc), checked; the
    caller (:func:`anomgan.export.onnx.export_onnx`) has checked that the head is fitted."""
    from .onnx import _import_onnx

    onnx = _import_onnx()
    head = detector.head
    s = head.config.size
    graph = head.ensemble.cpu().eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(graph, (torch.zeros(2, 2, s, s),), buf, dynamo=False, opset_version=opset,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "N"}, OUTPUT: {0: "N"}}, do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    from .. import __version__

    model.producer_name, model.producer_version = "anomgan", __version__
    model.doc_string = (f"anomgan defect head: head_input float32 (N, 2, {s}, {s}) -> logits "
                        f"float32 (N,); fused with the method file's scores (anomgan.defect_head)")
    onnx.checker.check_model(model)
    return model.SerializeToString()
