"""The one table from (op, backend) to kernels in anomgan.ops._backends: each op's row, and its
callables on this machine. (The fake kernels are checked per op by the opcheck tests.)"""
import importlib

import pytest
import torch

from anomgan.ops import _backends

from conftest import skip_unless_backend

# op -> (module that registers it, kernels per backend)
OPS = {
    "adam_step_": ("anomgan.ops.adam_step", 1),  # the in-place step
    "patch_topn_l1": ("anomgan.ops.patch_topn_l1", 2),  # forward, backward
    "residual_fm_loss": ("anomgan.ops.residual_fm_loss", 2),  # forward, backward
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_each_op_registers_one_row(op):
    module, count = OPS[op]
    mod = importlib.import_module(module)
    row = _backends._KERNELS[op]
    assert mod.SUPPORTED == ("torch", "cpp", "triton", "cuda")
    assert set(row) == {"cpp", "cuda", "triton"}
    assert all(len(specs) == count for specs in row.values())
    assert row["cpp"] == row["cuda"]  # one dispatcher op, a CPU and a CUDA implementation


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_kernels_resolve_to_callables(op, backend):
    skip_unless_backend(backend, "cpu")
    got = _backends.kernels(op, backend)
    assert len(got) == OPS[op][1] and all(callable(k) for k in got)
    if backend == "cpp":
        assert all(isinstance(k, torch._ops.OpOverloadPacket) for k in got)
    assert _backends.kernels(op, backend) == got  # resolved once


def test_a_second_row_for_an_op_is_refused_the_same_row_accepted():
    row = dict(_backends._KERNELS["patch_topn_l1"])
    with pytest.raises(ValueError, match="already registered"):
        _backends.register_kernels("patch_topn_l1", cpp="anomgan::adam_step")
    assert _backends.register_kernels("patch_topn_l1", **row) == ("torch", "cpp", "triton", "cuda")
    assert _backends._KERNELS["patch_topn_l1"] == row


def test_the_reference_backend_has_no_kernels():
    with pytest.raises(AssertionError, match="no torch kernels"):
        _backends.kernels("patch_topn_l1", "torch")


def test_one_out_dtype_rule():
    want = {torch.float64: torch.float64, torch.float32: torch.float32,
            torch.float16: torch.float32, torch.bfloat16: torch.float32}
    assert {d: _backends.out_dtype(d) for d in want} == want
