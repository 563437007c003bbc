"""Fake (meta) kernels of the compiled ``anomgan::`` ops, all in one place (as torchvision's
``_meta_registrations.py``): each gives the outputs' shapes, dtypes and devices from the
inputs' without running anything, so that FakeTensor, ``torch.library.opcheck`` and
``torch.compile`` can trace the C++/CUDA ops. Registered when :mod:`anomgan.ops` is imported,
for the ops the built extension defines (none when it is not built). The ops' schemas are in
``csrc/<op>.cpp``; what the outputs hold is in ``anomgan/ops/<op>.py``.
"""
from __future__ import annotations

import torch

from ._backends import _extension, out_dtype


def _register_fake(name: str):
    """``torch.library.register_fake("anomgan::<name>")`` when the extension defines the op."""

    def wrap(fn):
        if _extension()[0] is not None and hasattr(torch.ops.anomgan, name):
            torch.library.register_fake(f"anomgan::{name}")(fn)
        return fn

    return wrap


def _contiguous_like(t: torch.Tensor) -> torch.Tensor:
    """A gradient output: ``t``'s shape, dtype and device, contiguous (as the kernels write it)."""
    return torch.empty_like(t, memory_format=torch.contiguous_format)


@_register_fake("patch_topn_l1_fwd")
def _patch_topn_l1_fwd(x, y, patch, stride, n):
    B, _, H, W = x.shape
    od = out_dtype(x.dtype)
    hp, wp = (H - patch) // stride + 1, (W - patch) // stride + 1
    return (x.new_empty((B,), dtype=od), x.new_empty((B, hp, wp), dtype=od),
            x.new_empty((B, n), dtype=torch.int64))


@_register_fake("patch_topn_l1_bwd")
def _patch_topn_l1_bwd(g_scores, g_map, x, y, top_idx, patch, stride):
    return _contiguous_like(y)


@_register_fake("residual_fm_loss_fwd")
def _residual_fm_loss_fwd(x, gz, fx, fgz, lam, reduction):
    return x.new_empty((x.shape[0],), dtype=out_dtype(x.dtype))


@_register_fake("residual_fm_loss_bwd")
def _residual_fm_loss_bwd(g, x, gz, fx, fgz, lam, reduction):
    return _contiguous_like(gz), _contiguous_like(fgz)


@_register_fake("blend_tiles_add")
def _blend_tiles_add(acc, maps, ny, nx, origins):
    return None  # in place: no outputs


@_register_fake("adam_step")
def _adam_step(z, grad, exp_avg, exp_avg_sq, step, active, lr_tensor, lr, beta1, beta2, eps):
    return None  # in place: no outputs
