"""Shared test set-up.

Triton's interpreter must be chosen before triton is imported, so it is set here (the README's
test command sets it too). Every kernel output is poisoned (NaN / sentinel) during the tests.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from anomgan.ops import _backends  # noqa: E402
from anomgan.ops._poison import poisoned_outputs  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_sessionstart(session):
    """ANOMGAN_REQUIRE_BACKENDS=cpp,triton (set by CI) turns a missing backend into a failure,
    so that a broken build cannot pass as a row of skips."""
    required = [b for b in os.environ.get("ANOMGAN_REQUIRE_BACKENDS", "").split(",") if b]
    missing = {b: _backends.why_unavailable(b, "cpu") for b in required}
    missing = {b: why for b, why in missing.items() if why}
    if missing:
        raise pytest.UsageError(f"required backends unavailable: {missing}")


@pytest.fixture(autouse=True, scope="session")
def _poison_kernel_outputs():
    with poisoned_outputs():
        yield


def skip_unless_backend(backend: str, device: str) -> None:
    """Skip with the true reason when ``backend`` cannot run ``device`` tensors here."""
    reason = _backends.why_unavailable(backend, device)
    if reason is not None:
        pytest.skip(f"{backend} on {device}: {reason}")


def backend_device_params(backends=_backends.BACKENDS):
    """pytest params of every (backend, device) pair that makes sense on some machine."""
    out = []
    for be in backends:
        for dev in ("cpu", "cuda"):
            if be == "cpp" and dev == "cuda" or be == "cuda" and dev == "cpu":
                continue
            out.append(pytest.param(be, dev, id=f"{be}-{dev}"))
    return out
