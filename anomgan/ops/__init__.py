"""The kernels' Python face: one function per op, each with a pure-PyTorch reference and a
``backend=`` choice (see :mod:`anomgan.ops._backends`: the backends and the one table from an
op and a backend to its kernels; :mod:`anomgan.ops._fakes`: the compiled ops' fake kernels)."""
from ._backends import BackendUnavailableError, available_backends
from .adam_step import adam_step_, adam_step_reference
from .blend_tiles import blend_tiles_add, blend_tiles_add_reference
from .patch_topn_l1 import patch_topn_l1, patch_topn_l1_reference, pixel_error_map
from .residual_fm_loss import residual_fm_loss, residual_fm_loss_reference
from . import _fakes  # noqa: F401  (registers the compiled ops' fake kernels)

__all__ = [
    "BackendUnavailableError",
    "adam_step_",
    "adam_step_reference",
    "available_backends",
    "blend_tiles_add",
    "blend_tiles_add_reference",
    "patch_topn_l1",
    "patch_topn_l1_reference",
    "pixel_error_map",
    "residual_fm_loss",
    "residual_fm_loss_reference",
]
