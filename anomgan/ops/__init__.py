"""The kernels' Python face: one function per op, each with a pure-PyTorch reference and a
``backend=`` choice (see :mod:`anomgan.ops._backends`)."""
from ._backends import BackendUnavailableError, available_backends
from .adam_step import adam_step_, adam_step_reference
from .patch_topn_l1 import patch_topn_l1, patch_topn_l1_reference, pixel_error_map
from .residual_fm_loss import residual_fm_loss, residual_fm_loss_reference

__all__ = [
    "BackendUnavailableError",
    "adam_step_",
    "adam_step_reference",
    "available_backends",
    "patch_topn_l1",
    "patch_topn_l1_reference",
    "pixel_error_map",
    "residual_fm_loss",
    "residual_fm_loss_reference",
]
