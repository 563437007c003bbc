"""The latent-search ops, every available backend side by side with the pure-PyTorch reference,
at the size of one batched AnoGAN search step: B = 64 queries of 1×64×64 float32, features of a
DCGAN discriminator trunk (256×8×8), latent vectors of D = 100.

Run:  python -m pytest benchmarks/test_bench_latent_ops.py --benchmark-only
Bytes counted for a floor: the loss forward reads x, gz, fx, fgz once; forward + backward also
reads them again and writes grad_gz and grad_fgz; Adam reads z, grad, both moments and writes z
and both moments.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "0")  # never benchmark the interpreter

import pytest  # noqa: E402
import torch  # noqa: E402

from anomgan.ops import adam_step_, available_backends, residual_fm_loss  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
B, X_SHAPE, F_SHAPE, D = 64, (1, 64, 64), (256, 8, 8), 100


def _cases():
    for dev in DEVICES:
        for be in available_backends(dev):
            yield pytest.param(dev, be, id=f"{dev}-{be}")


@pytest.fixture
def keep(request):
    """benchmarks/conftest.py's record (the closing ratio table) where there is one."""
    try:
        return request.getfixturevalue("record")
    except pytest.FixtureLookupError:
        return lambda *args, **kwargs: None


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _loss_inputs(device):
    gen = torch.Generator().manual_seed(0)
    x, gz = (torch.rand((B, *X_SHAPE), generator=gen).to(device) for _ in range(2))
    fx, fgz = (torch.randn((B, *F_SHAPE), generator=gen).to(device) for _ in range(2))
    return x, gz, fx, fgz


def _nbytes(*ts):
    return sum(t.numel() * t.element_size() for t in ts)


@pytest.mark.benchmark(group="latent_ops residual_fm_loss fwd")
@pytest.mark.parametrize("device,backend", list(_cases()))
def test_residual_fm_loss_forward(benchmark, keep, device, backend):
    x, gz, fx, fgz = _loss_inputs(device)
    ref = residual_fm_loss(x, gz, fx, fgz, backend="torch")
    got = residual_fm_loss(x, gz, fx, fgz, backend=backend)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)  # time only a right answer

    def run():
        out = residual_fm_loss(x, gz, fx, fgz, backend=backend)
        _sync(device)
        return out

    benchmark.group = f"latent_ops residual_fm_loss fwd {device} B{B}"
    benchmark.pedantic(run, rounds=30 if device == "cpu" else 200, warmup_rounds=3)
    keep(benchmark.group, backend, benchmark, _nbytes(x, gz, fx, fgz), device)


@pytest.mark.benchmark(group="latent_ops residual_fm_loss fwd+bwd")
@pytest.mark.parametrize("device,backend", list(_cases()))
def test_residual_fm_loss_forward_backward(benchmark, keep, device, backend):
    """A search step's loss: forward, then the gradients w.r.t. G(z) and f(G(z))."""
    x, gz, fx, fgz = _loss_inputs(device)
    gz.requires_grad_(True)
    fgz.requires_grad_(True)

    def run():
        loss = residual_fm_loss(x, gz, fx, fgz, backend=backend)
        grads = torch.autograd.grad(loss.sum(), (gz, fgz))
        _sync(device)
        return grads

    want = torch.autograd.grad(residual_fm_loss(x, gz, fx, fgz, backend="torch").sum(), (gz, fgz))
    for g, w in zip(run(), want):
        torch.testing.assert_close(g, w)
    benchmark.group = f"latent_ops residual_fm_loss fwd+bwd {device} B{B}"
    benchmark.pedantic(run, rounds=30 if device == "cpu" else 200, warmup_rounds=3)
    keep(benchmark.group, backend, benchmark, 3 * _nbytes(x, gz, fx, fgz), device)


@pytest.mark.benchmark(group="latent_ops adam_step_")
@pytest.mark.parametrize("device,backend", list(_cases()))
def test_adam_step(benchmark, keep, device, backend):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(B, D, generator=gen).to(device)
    grad = torch.randn(B, D, generator=gen).to(device)
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    step = torch.zeros(B, dtype=torch.int64, device=device)
    active = (torch.arange(B) % 8 != 0).to(device)  # some samples already converged
    state = [t.clone() for t in (z, m, v, step)]
    adam_step_(state[0], grad, state[1], state[2], state[3], active, lr=0.01, backend="torch")
    check = [t.clone() for t in (z, m, v, step)]
    adam_step_(check[0], grad, check[1], check[2], check[3], active, lr=0.01, backend=backend)
    torch.testing.assert_close(check[0], state[0], rtol=1e-5, atol=1e-6)

    def run():
        adam_step_(z, grad, m, v, step, active, lr=0.01, backend=backend)
        _sync(device)

    benchmark.group = f"latent_ops adam_step_ {device} B{B} D{D}"
    benchmark.pedantic(run, rounds=100 if device == "cpu" else 500, warmup_rounds=5)
    keep(benchmark.group, backend, benchmark, 7 * _nbytes(z), device)
