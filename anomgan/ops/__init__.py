"""The kernels' Python face: one function per op, each with a pure-PyTorch reference and a
``backend=`` choice (see :mod:`anomgan.ops._backends`)."""
from ._backends import BackendUnavailableError, available_backends
from .patch_topn_l1 import patch_topn_l1, patch_topn_l1_reference, pixel_error_map

__all__ = [
    "BackendUnavailableError",
    "available_backends",
    "patch_topn_l1",
    "patch_topn_l1_reference",
    "pixel_error_map",
]
