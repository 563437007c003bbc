"""patch_topn_l1: every available backend side by side with the pure-PyTorch reference.

Bytes counted for the floor: x and y read once (the outputs are 1/64 of that and ignored).
CPU: B = 8 images of 1×1024×1024 and 3×1024×1024 float32. GPU: the same plus B = 64.
"""
import pytest
import torch

from anomgan.ops import available_backends, patch_topn_l1

from conftest import copy_bandwidth

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SHAPES = [(8, 1, 1024, 1024), (8, 3, 1024, 1024)]


def _cases():
    for dev in DEVICES:
        shapes = SHAPES + ([(64, 1, 1024, 1024)] if dev == "cuda" else [])
        for shape in shapes:
            for be in available_backends(dev):
                yield pytest.param(dev, shape, be, id=f"{dev}-{'x'.join(map(str, shape))}-{be}")


@pytest.mark.parametrize("device,shape,backend", list(_cases()))
def test_patch_topn_l1_forward(benchmark, record, device, shape, backend):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=gen).to(device)
    y = torch.rand(shape, generator=gen).to(device)
    ref = patch_topn_l1(x, y, backend="torch")
    got = patch_topn_l1(x, y, backend=backend)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-4, atol=1e-5)  # time only a right answer

    def run():
        out = patch_topn_l1(x, y, backend=backend)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.group = f"patch_topn_l1 fwd {device} {'x'.join(map(str, shape))}"
    benchmark.pedantic(run, rounds=10 if device == "cpu" else 50, warmup_rounds=2)
    copy_bandwidth(device)
    record(benchmark.group, backend, benchmark, 2 * x.numel() * x.element_size(), device)


@pytest.mark.parametrize("device,shape,backend",
                         [p for p in _cases() if p.values[1] == SHAPES[0]])
def test_patch_topn_l1_forward_backward(benchmark, record, device, shape, backend):
    """The dual-disc patch loss in training: score, then gradient w.r.t. y."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=gen).to(device)
    y = torch.rand(shape, generator=gen).to(device).requires_grad_(True)

    def run():
        s, _ = patch_topn_l1(x, y, backend=backend)
        (g,) = torch.autograd.grad(s.sum(), y)
        if device == "cuda":
            torch.cuda.synchronize()
        return g

    torch.testing.assert_close(run(), torch.autograd.grad(
        patch_topn_l1(x, y, backend="torch")[0].sum(), y)[0], rtol=1e-4, atol=1e-9)
    benchmark.group = f"patch_topn_l1 fwd+bwd {device} {'x'.join(map(str, shape))}"
    benchmark.pedantic(run, rounds=5 if device == "cpu" else 30, warmup_rounds=1)
    copy_bandwidth(device)
    # fwd reads x, y; bwd reads x, y and writes grad_y
    record(benchmark.group, backend, benchmark, 5 * x.numel() * x.element_size(), device)
