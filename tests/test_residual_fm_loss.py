"""residual_fm_loss on every backend against an independent float64 oracle (per-sample loops,
explicit sign-formula gradients)."""
import pytest
import torch

from anomgan.ops import residual_fm_loss
from anomgan.ops.residual_fm_loss import SUPPORTED

from conftest import backend_device_params, skip_unless_backend

BD = backend_device_params(SUPPORTED)
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def oracle(x, gz, fx, fgz, lam, reduction, g=None):
    """float64 (loss (B,), grad_gz, grad_fgz): one sample at a time, from the contract."""
    B = x.shape[0]
    x, gz, fx, fgz = (t.detach().cpu().double() for t in (x, gz, fx, fgz))
    loss = torch.empty(B, dtype=torch.float64)
    ggz, gfgz = torch.empty_like(gz), torch.empty_like(fgz)
    g = torch.ones(B, dtype=torch.float64) if g is None else g.detach().cpu().double()
    for b in range(B):
        n, m = x[b].numel(), fx[b].numel()
        wr = (1 - lam) / n if reduction == "mean" else (1 - lam)
        wf = lam / m if reduction == "mean" else lam
        loss[b] = wr * (x[b] - gz[b]).abs().sum() + wf * (fx[b] - fgz[b]).abs().sum()
        ggz[b] = g[b] * wr * torch.sign(gz[b] - x[b])
        gfgz[b] = g[b] * wf * torch.sign(fgz[b] - fx[b])
    return loss, ggz, gfgz


def loss_tol(dtype):
    # float32 accumulation (float64 for float64) of already-rounded inputs
    return dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)


def grad_tol(dtype):
    # the gradient is g*w*sign rounded once to the input dtype (float16: maybe to a subnormal)
    return {torch.float64: dict(rtol=1e-12, atol=0), torch.float32: dict(rtol=1e-6, atol=0),
            torch.float16: dict(rtol=1e-3, atol=1e-7), torch.bfloat16: dict(rtol=8e-3, atol=0)}[dtype]


def rand(shape, dtype, device, gen):
    return torch.rand(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


CASES = [  # (B, sample shape of x, sample shape of f)
    (3, (1, 9, 11), (5, 3, 3)),
    (1, (1, 1, 1), (1,)),
    (4, (3, 17), (33,)),
    (2, (), (7,)),  # x is (B,): one element per sample
    (5, (2, 13, 7), (4, 1, 5, 3)),
    (2, (1, 190, 190), (256, 3, 3)),  # > one CPU chunk of the x pair
]


def _big(case):
    return case[1] and torch.Size(case[1]).numel() > 10_000


@pytest.mark.parametrize("backend,device", BD)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'x'.join(map(str, c[1]))}-{'x'.join(map(str, c[2]))}")
def test_loss_and_gradients_match_oracle(backend, device, dtype, reduction, case):
    skip_unless_backend(backend, device)
    if backend == "triton" and device == "cpu" and _big(case):
        pytest.skip("triton on cpu runs in the interpreter: the large case is covered on a GPU")
    B, xs, fs = case
    gen = torch.Generator().manual_seed(hash((case, reduction)) % 2**31)
    x, gz = rand((B, *xs), dtype, device, gen), rand((B, *xs), dtype, device, gen)
    fx, fgz = rand((B, *fs), dtype, device, gen), rand((B, *fs), dtype, device, gen)
    for t in (gz, fgz):
        t.requires_grad_(True)
    lam = 0.1 + 0.8 * torch.rand((), generator=gen).item()
    loss = residual_fm_loss(x, gz, fx, fgz, lam=lam, reduction=reduction, backend=backend)
    od = torch.float64 if dtype == torch.float64 else torch.float32
    assert loss.dtype == od and loss.shape == (B,) and loss.device.type == device
    g = torch.randn(B, generator=gen, dtype=torch.float64)
    ref, ref_ggz, ref_gfgz = oracle(x, gz, fx, fgz, lam, reduction, g)
    torch.testing.assert_close(loss.cpu().double(), ref, **loss_tol(dtype))
    ggz, gfgz = torch.autograd.grad(loss, (gz, fgz), g.to(device, od))
    assert ggz.dtype == dtype and ggz.shape == gz.shape
    assert gfgz.dtype == dtype and gfgz.shape == fgz.shape
    torch.testing.assert_close(ggz.cpu().double(), ref_ggz, **grad_tol(dtype))
    torch.testing.assert_close(gfgz.cpu().double(), ref_gfgz, **grad_tol(dtype))


@pytest.mark.parametrize("backend,device", BD)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_equal_elements_get_zero_gradient(backend, device, dtype):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(9)
    x, fx = rand((3, 2, 6, 5), dtype, device, gen), rand((3, 8, 2, 2), dtype, device, gen)
    gz, fgz = rand(x.shape, dtype, device, gen), rand(fx.shape, dtype, device, gen)
    tie_x = torch.rand(x.shape, generator=gen) < 0.4
    tie_f = torch.rand(fx.shape, generator=gen) < 0.4
    tie_f[1] = True  # a whole sample of features equal: its feature term is 0
    gz = torch.where(tie_x.to(device), x, gz).requires_grad_(True)
    fgz = torch.where(tie_f.to(device), fx, fgz).requires_grad_(True)
    x, fx = x.clone().requires_grad_(True), fx.clone().requires_grad_(True)
    loss = residual_fm_loss(x, gz, fx, fgz, lam=0.3, backend=backend)
    gx, ggz, gfx, gfgz = torch.autograd.grad(loss.sum(), (x, gz, fx, fgz))
    # low-precision random values may tie by chance too: the rule is about every equal pair
    eq_x, eq_f = (x == gz).cpu(), (fx == fgz).cpu()
    assert eq_x[tie_x].all() and eq_f[tie_f].all()
    for grad, tie in ((gx, eq_x), (ggz, eq_x), (gfx, eq_f), (gfgz, eq_f)):
        grad = grad.cpu()
        assert torch.count_nonzero(grad[tie]).item() == 0
        assert torch.count_nonzero(grad[~tie]).item() == int((~tie).sum())
    ref, _, _ = oracle(x, gz, fx, fgz, 0.3, "mean")
    torch.testing.assert_close(loss.detach().cpu().double(), ref, **loss_tol(dtype))


@pytest.mark.parametrize("backend,device", BD)
def test_identical_inputs_give_zero_loss_and_gradient(backend, device):
    skip_unless_backend(backend, device)
    x, fx = torch.rand(2, 1, 8, 8, device=device), torch.rand(2, 16, device=device)
    gz, fgz = x.clone().requires_grad_(True), fx.clone().requires_grad_(True)
    loss = residual_fm_loss(x, gz, fx, fgz, backend=backend)
    assert loss.tolist() == [0.0, 0.0]
    ggz, gfgz = torch.autograd.grad(loss.sum(), (gz, fgz))
    assert torch.count_nonzero(ggz).item() == 0 and torch.count_nonzero(gfgz).item() == 0


@pytest.mark.parametrize("backend,device", BD)
@pytest.mark.parametrize("layout", ["batch_sliced", "channels_last", "transposed", "expanded_query"])
def test_non_contiguous_inputs(backend, device, layout):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(3)
    bx, bgz = rand((6, 3, 10, 12), torch.float32, device, gen), rand((6, 3, 10, 12), torch.float32, device, gen)
    bfx, bfgz = rand((6, 8, 5, 5), torch.float32, device, gen), rand((6, 8, 5, 5), torch.float32, device, gen)
    if layout == "batch_sliced":  # every other sample: the kernels take it without a copy
        x, gz, fx, fgz = bx[::2], bgz[1::2], bfx[::2], bfgz[1::2]
    elif layout == "channels_last":
        x, gz = (t[:3].contiguous(memory_format=torch.channels_last) for t in (bx, bgz))
        fx, fgz = (t[:3].contiguous(memory_format=torch.channels_last) for t in (bfx, bfgz))
    elif layout == "transposed":
        x, gz, fx, fgz = (t[:3].transpose(2, 3) for t in (bx, bgz, bfx, bfgz))
    else:  # one query searched by three latent vectors
        x, fx = bx[:1].expand(3, -1, -1, -1), bfx[:1].expand(3, -1, -1, -1)
        gz, fgz = bgz[:3], bfgz[:3]
    assert not (x.is_contiguous() and gz.is_contiguous())
    gz, fgz = gz.detach().requires_grad_(True), fgz.detach().requires_grad_(True)
    loss = residual_fm_loss(x, gz, fx, fgz, lam=0.25, reduction="sum", backend=backend)
    ref, ref_ggz, ref_gfgz = oracle(x, gz, fx, fgz, 0.25, "sum")
    torch.testing.assert_close(loss.cpu().double(), ref, **loss_tol(torch.float32))
    ggz, gfgz = torch.autograd.grad(loss.sum(), (gz, fgz))
    torch.testing.assert_close(ggz.cpu().double(), ref_ggz, **grad_tol(torch.float32))
    torch.testing.assert_close(gfgz.cpu().double(), ref_gfgz, **grad_tol(torch.float32))


@pytest.mark.parametrize("backend,device", BD)
@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_lam_at_the_ends_keeps_one_term(backend, device, lam):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(4)
    x, gz = rand((2, 1, 7, 7), torch.float64, device, gen), rand((2, 1, 7, 7), torch.float64, device, gen)
    fx, fgz = rand((2, 30), torch.float64, device, gen), rand((2, 30), torch.float64, device, gen)
    gz.requires_grad_(True)
    fgz.requires_grad_(True)
    loss = residual_fm_loss(x, gz, fx, fgz, lam=lam, backend=backend)
    ggz, gfgz = torch.autograd.grad(loss.sum(), (gz, fgz))
    if lam == 0.0:
        torch.testing.assert_close(loss.cpu(), (x - gz).abs().flatten(1).mean(1).detach().cpu())
        assert torch.count_nonzero(gfgz).item() == 0
    else:
        torch.testing.assert_close(loss.cpu(), (fx - fgz).abs().mean(1).detach().cpu())
        assert torch.count_nonzero(ggz).item() == 0


@pytest.mark.parametrize("backend,device", BD)
def test_gradients_wrt_x_and_fx_are_the_negatives(backend, device):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(5)
    ts = [rand((3, 2, 5, 4), torch.float64, device, gen) for _ in range(2)]
    ts += [rand((3, 11), torch.float64, device, gen) for _ in range(2)]
    x, gz, fx, fgz = (t.requires_grad_(True) for t in ts)
    loss = residual_fm_loss(x, gz, fx, fgz, lam=0.4, backend=backend)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, device=device)
    gx, ggz, gfx, gfgz = torch.autograd.grad(loss, (x, gz, fx, fgz), w)
    torch.testing.assert_close(gx, -ggz)
    torch.testing.assert_close(gfx, -gfgz)
    assert torch.count_nonzero(ggz).item() == ggz.numel()
    # only x asks for a gradient: the others get none
    x2 = x.detach().requires_grad_(True)
    loss2 = residual_fm_loss(x2, gz.detach(), fx.detach(), fgz.detach(), lam=0.4, backend=backend)
    (gx2,) = torch.autograd.grad(loss2, (x2,), w)
    torch.testing.assert_close(gx2, gx)


@pytest.mark.parametrize("backend,device", BD)
def test_gradcheck_float64(backend, device):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(2)
    x, gz = rand((2, 1, 5, 6), torch.float64, device, gen), rand((2, 1, 5, 6), torch.float64, device, gen)
    fx, fgz = rand((2, 4, 3), torch.float64, device, gen), rand((2, 4, 3), torch.float64, device, gen)
    # |a - b| has a kink at a == b; random inputs keep every element far from it for eps=1e-6
    assert (x - gz).abs().min() > 1e-4 and (fx - fgz).abs().min() > 1e-4
    for t in (x, gz, fx, fgz):
        t.requires_grad_(True)
    for reduction in ("mean", "sum"):
        def f(a, b, c, d):
            return residual_fm_loss(a, b, c, d, lam=0.3, reduction=reduction, backend=backend)

        # the kernels' gradients are compared element by element with the oracle elsewhere;
        # here a random projection (fast mode) checks them against finite differences
        assert torch.autograd.gradcheck(f, (x, gz, fx, fgz), eps=1e-6, atol=1e-7,
                                        fast_mode=backend != "torch")


@pytest.mark.parametrize("backend,device", BD)
def test_nan_poisons_only_its_own_sample(backend, device):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(11)
    x, gz = rand((3, 1, 6, 6), torch.float32, device, gen), rand((3, 1, 6, 6), torch.float32, device, gen)
    fx, fgz = rand((3, 9), torch.float32, device, gen), rand((3, 9), torch.float32, device, gen)
    fgz[1, 4] = float("nan")
    loss = residual_fm_loss(x, gz, fx, fgz, backend=backend)
    ref, _, _ = oracle(x[[0, 2]], gz[[0, 2]], fx[[0, 2]], fgz[[0, 2]], 0.1, "mean")
    assert torch.isnan(loss[1])
    torch.testing.assert_close(loss[[0, 2]].cpu().double(), ref, **loss_tol(torch.float32))


@pytest.mark.parametrize("backend,device", BD)
def test_empty_batch(backend, device):
    skip_unless_backend(backend, device)
    x, fx = torch.rand(0, 1, 8, 8, device=device), torch.rand(0, 16, device=device)
    loss = residual_fm_loss(x, x.clone(), fx, fx.clone(), backend=backend)
    assert loss.shape == (0,) and loss.dtype == torch.float32


def _four(xs=(2, 1, 4, 4), fs=(2, 6), dtype=torch.float32):
    return torch.rand(xs, dtype=dtype), torch.rand(xs, dtype=dtype), torch.rand(fs, dtype=dtype), torch.rand(fs, dtype=dtype)


def _with(i, t):
    ts = list(_four())
    ts[i] = t
    return tuple(ts)


LAM_RANGE = r"lam must be a finite number in \[0.0, 1.0\]"
BAD = [
    (lambda: _with(1, torch.rand(2, 1, 4, 5)), {}, ValueError, "x and gz must have the same shape"),
    (lambda: _with(3, torch.rand(2, 7)), {}, ValueError, "fx and fgz must have the same shape"),
    (lambda: _four(fs=(3, 6)), {}, ValueError, "same batch size"),
    (lambda: _with(1, torch.rand(2, 1, 4, 4, dtype=torch.float64)), {}, TypeError, "same dtype"),
    (lambda: _with(2, torch.rand(2, 6, dtype=torch.float16)), {}, TypeError, "same dtype"),
    (lambda: _with(1, torch.rand(2, 1, 4, 4, device="meta")), {}, ValueError, "same device"),
    (lambda: _with(0, torch.ones(2, 1, 4, 4, dtype=torch.int32)), {}, TypeError, "int32"),
    (lambda: _with(0, torch.rand(2, 1, 4, 4).numpy()), {}, TypeError, "torch.Tensor"),
    (lambda: _with(0, torch.tensor(1.0)), {}, ValueError, "at least 1 dimension"),
    (lambda: _four(xs=(2, 0, 4)), {}, ValueError, "at least one element"),
    (lambda: _four(), {"lam": 1.5}, ValueError, LAM_RANGE),
    (lambda: _four(), {"lam": -0.1}, ValueError, LAM_RANGE),
    (lambda: _four(), {"lam": float("nan")}, ValueError, LAM_RANGE),
    (lambda: _four(), {"lam": "0.1"}, TypeError, "lam must be a finite number .*got str"),
    (lambda: _four(), {"reduction": "max"}, ValueError, "reduction must be one of"),
    (lambda: _four(), {"reduction": None}, ValueError, "reduction must be one of"),
]


@pytest.mark.parametrize("make,kwargs,exc,msg", BAD)
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_bad_input_is_a_clear_error(make, kwargs, exc, msg, backend):
    skip_unless_backend(backend, "cpu")
    x, gz, fx, fgz = make()
    with pytest.raises(exc, match=msg):
        residual_fm_loss(x, gz, fx, fgz, backend=backend, **kwargs)


def test_cpp_ops_check_their_arguments_before_touching_memory():
    skip_unless_backend("cpp", "cpu")
    fwd, bwd = torch.ops.anomgan.residual_fm_loss_fwd, torch.ops.anomgan.residual_fm_loss_bwd
    x, gz, fx, fgz = _four()
    with pytest.raises(ValueError, match="contiguous samples"):
        fwd(x.transpose(2, 3), gz, fx, fgz, 0.1, "mean")
    with pytest.raises(ValueError, match="lam must be in"):
        fwd(x, gz, fx, fgz, 2.0, "mean")
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        fwd(x, gz, fx, fgz, 0.1, "none")
    with pytest.raises(ValueError, match="same batch size"):
        fwd(x, gz, fx[:1], fgz[:1], 0.1, "mean")
    with pytest.raises(TypeError, match="one dtype"):
        fwd(x, gz, fx.double(), fgz.double(), 0.1, "mean")
    with pytest.raises(ValueError, match="g must be"):
        bwd(torch.ones(3), x, gz, fx, fgz, 0.1, "mean")
    with pytest.raises(TypeError, match="g must be"):
        bwd(torch.ones(2, dtype=torch.float64), x, gz, fx, fgz, 0.1, "mean")


def test_opcheck_cpp_ops():
    skip_unless_backend("cpp", "cpu")
    gen = torch.Generator().manual_seed(0)
    x, gz = rand((3, 2, 5, 7), torch.float32, "cpu", gen), rand((3, 2, 5, 7), torch.float32, "cpu", gen)
    fx, fgz = rand((3, 4, 3, 3), torch.float32, "cpu", gen), rand((3, 4, 3, 3), torch.float32, "cpu", gen)
    utils = ("test_schema", "test_faketensor")
    torch.library.opcheck(torch.ops.anomgan.residual_fm_loss_fwd.default, (x, gz, fx, fgz, 0.1, "mean"),
                          test_utils=utils)
    torch.library.opcheck(torch.ops.anomgan.residual_fm_loss_bwd.default,
                          (torch.rand(3), x, gz, fx, fgz, 0.1, "sum"), test_utils=utils)


def test_torch_compile_traces_the_cpp_ops_forward_and_backward():
    skip_unless_backend("cpp", "cpu")
    gen = torch.Generator().manual_seed(4)
    x, gz = rand((2, 1, 6, 6), torch.float32, "cpu", gen), rand((2, 1, 6, 6), torch.float32, "cpu", gen)
    fx, fgz = rand((2, 10), torch.float32, "cpu", gen), rand((2, 10), torch.float32, "cpu", gen)
    gz.requires_grad_(True)
    fgz.requires_grad_(True)

    def f(a, b, c, d):
        return residual_fm_loss(a, b, c, d, lam=0.2, backend="cpp") * 2.0

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    got = compiled(x, gz, fx, fgz)
    want = f(x, gz, fx, fgz)
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got.sum(), (gz, fgz)), torch.autograd.grad(want.sum(), (gz, fgz))):
        torch.testing.assert_close(g, w)
