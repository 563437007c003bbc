"""adam_step_ on every backend against torch.optim.Adam (one optimizer per sample, stepped only
while the sample is active), over many steps with samples frozen and restarted."""
import pytest
import torch

from anomgan.ops import adam_step_
from anomgan.ops.adam_step import SUPPORTED

from conftest import backend_device_params, skip_unless_backend

BD = backend_device_params(SUPPORTED)


def tol(dtype):
    # one rounding difference per step (torch's CPU sqrt is not always correctly rounded) may
    # carry over the 50 steps
    return dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-5, atol=2e-6)


def schedule(k, b):
    """Whether sample b takes step k: 0 always, 1 stops at 20, 2 only every third step, 3 starts
    at 10, 4 pauses in [15, 35), 5 never."""
    return [True, k < 20, k % 3 == 0, k >= 10, not 15 <= k < 35, False][b]


@pytest.mark.parametrize("backend,device", BD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.3, 0.8)], ids=["default", "small_beta1"])
def test_matches_torch_optim_adam_over_50_steps(backend, device, dtype, lr_kind, betas):
    skip_unless_backend(backend, device)
    B, D, steps = 6, 13, 50
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(B, D, generator=gen, dtype=torch.float64).to(dtype)
    lrs = [0.01, 0.03, 0.002, 0.05, 0.01, 0.02] if lr_kind == "tensor" else [0.01] * B
    params = [torch.nn.Parameter(z0[b].clone()) for b in range(B)]
    opts = [torch.optim.Adam([p], lr=lrs[b], betas=betas) for b, p in enumerate(params)]
    z = z0.clone().to(device)
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    step = torch.zeros(B, dtype=torch.int64, device=device)
    lr = torch.tensor(lrs, dtype=torch.float64, device=device) if lr_kind == "tensor" else 0.01
    frozen_at = {}
    for k in range(steps):
        grad = torch.randn(B, D, generator=gen, dtype=torch.float64).to(dtype)
        active = torch.tensor([schedule(k, b) for b in range(B)])
        for b in range(B):
            if active[b]:
                params[b].grad = grad[b].clone()
                opts[b].step()
        if k == 20:  # sample 1 has been frozen since step 20: remember its state
            frozen_at = {n: t[1].clone() for n, t in (("z", z), ("m", m), ("v", v), ("step", step))}
        out = adam_step_(z, grad.to(device), m, v, step, active.to(device), lr=lr, betas=betas,
                         backend=backend)
        assert out is z
    want_z = torch.stack([p.detach() for p in params])
    want_m = torch.stack([o.state[p]["exp_avg"] if o.state else torch.zeros(D, dtype=dtype)
                          for o, p in zip(opts, params)])
    want_v = torch.stack([o.state[p]["exp_avg_sq"] if o.state else torch.zeros(D, dtype=dtype)
                          for o, p in zip(opts, params)])
    want_step = [int(o.state[p]["step"]) if o.state else 0 for o, p in zip(opts, params)]
    assert step.cpu().tolist() == want_step == [sum(schedule(k, b) for k in range(steps)) for b in range(B)]
    torch.testing.assert_close(z.cpu(), want_z, **tol(dtype))
    torch.testing.assert_close(m.cpu(), want_m, **tol(dtype))
    torch.testing.assert_close(v.cpu(), want_v, **tol(dtype))
    # a frozen sample's state is bit-for-bit what it was
    assert torch.equal(z[1], frozen_at["z"]) and torch.equal(m[1], frozen_at["m"])
    assert torch.equal(v[1], frozen_at["v"]) and torch.equal(step[1], frozen_at["step"])
    assert torch.equal(z[5].cpu(), z0[5]) and step[5].item() == 0 and torch.count_nonzero(m[5]).item() == 0


@pytest.mark.parametrize("backend,device", BD)
def test_inactive_samples_are_never_read_into_or_written(backend, device):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(2)
    B, D = 5, 9
    z = torch.randn(B, D, generator=gen).to(device)
    m, v = torch.randn(B, D, generator=gen).to(device), torch.rand(B, D, generator=gen).to(device)
    step = torch.tensor([3, 0, 7, 1, 2], device=device)
    active = torch.tensor([True, False, True, False, False], device=device)
    grad = torch.randn(B, D, generator=gen).to(device)
    grad[~active] = float("nan")  # whatever an inactive sample's gradient holds
    lr = torch.full((B,), float("nan"), dtype=torch.float64, device=device)
    lr[active] = 0.01
    before = [t.clone() for t in (z, m, v, step)]
    adam_step_(z, grad, m, v, step, active, lr=lr, backend=backend)
    for new, old in zip((z, m, v, step), before):
        assert torch.equal(new[~active], old[~active])
        assert not torch.equal(new[active], old[active])
    assert torch.isfinite(z).all()
    assert step.cpu().tolist() == [4, 0, 8, 1, 2]


@pytest.mark.parametrize("backend,device", BD)
@pytest.mark.parametrize("layout", ["column_slice", "transposed", "row_slice"])
def test_non_contiguous_state_is_updated_in_place(backend, device, layout):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(3)
    B, D = 4, 7

    def view(t):  # the (B, D) state as a non-contiguous view of a larger tensor
        if layout == "column_slice":
            big = torch.zeros(B, 2 * D + 1, dtype=t.dtype, device=device)
            big[:, 1::2] = t
            return big[:, 1::2]
        if layout == "transposed":
            return t.t().contiguous().t()
        big = torch.zeros(2 * B, D, dtype=t.dtype, device=device)
        big[::2] = t
        return big[::2]

    z0 = torch.randn(B, D, generator=gen, dtype=torch.float64).to(device)
    g = torch.randn(B, D, generator=gen, dtype=torch.float64).to(device)
    m0, v0 = torch.randn(B, D, generator=gen, dtype=torch.float64).to(device), torch.rand(B, D, generator=gen, dtype=torch.float64).to(device)
    step0 = torch.tensor([0, 4, 2, 9], device=device)
    active = torch.tensor([True, True, False, True], device=device)
    ref = [t.clone() for t in (z0, m0, v0, step0)]
    zr, mr, vr, sr = ref
    adam_step_(zr, g, mr, vr, sr, active, lr=0.05, backend="torch")
    z, m, v, gg = view(z0), view(m0), view(v0), view(g)
    step = torch.zeros(2 * B, dtype=torch.int64, device=device)[::2]
    step.copy_(step0)
    assert not z.is_contiguous()
    adam_step_(z, gg, m, v, step, active, lr=0.05, backend=backend)
    torch.testing.assert_close(z, zr, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(m, mr, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(v, vr, rtol=1e-12, atol=1e-14)
    assert torch.equal(step, sr)


@pytest.mark.parametrize("backend,device", BD)
def test_float32_lr_tensor_and_leaf_that_requires_grad(backend, device):
    skip_unless_backend(backend, device)
    z = torch.zeros(2, 3, device=device, requires_grad=True)  # a latent leaf of the search
    g = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.5, -1.0]], device=device)
    m, v, step = torch.zeros_like(g), torch.zeros_like(g), torch.zeros(2, dtype=torch.int64, device=device)
    lr = torch.tensor([0.1, 0.2], device=device)
    adam_step_(z, g, m, v, step, torch.ones(2, dtype=torch.bool, device=device), lr=lr, backend=backend)
    # first step of Adam: -lr * sign(g) (up to eps)
    want = -lr.double().cpu()[:, None] * torch.sign(g.double().cpu())
    torch.testing.assert_close(z.detach().cpu().double(), want, rtol=1e-6, atol=1e-7)
    assert z.requires_grad and z.grad is None


@pytest.mark.parametrize("backend,device", BD)
def test_empty_batch(backend, device):
    skip_unless_backend(backend, device)
    z = torch.zeros(0, 4, device=device)
    step = torch.zeros(0, dtype=torch.int64, device=device)
    adam_step_(z, z.clone(), z.clone(), z.clone(), step, torch.zeros(0, dtype=torch.bool, device=device),
               lr=0.1, backend=backend)


@pytest.mark.parametrize("backend,device", [p for p in BD if p.values[1] == "cuda"])
def test_cuda_graph_capture(backend, device):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(6)
    B, D = 8, 100
    z = torch.randn(B, D, generator=gen).cuda()
    g = torch.randn(B, D, generator=gen).cuda()
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    step = torch.zeros(B, dtype=torch.int64, device="cuda")
    active = (torch.arange(B) % 3 != 0).cuda()
    lr = torch.full((B,), 0.01, dtype=torch.float64, device="cuda")
    ref = [t.clone() for t in (z, m, v, step)]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up (compiles the Triton kernel) outside the capture
        adam_step_(*[t.clone() for t in (z, g, m, v, step)], active, lr=lr, backend=backend)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        adam_step_(z, g, m, v, step, active, lr=lr, backend=backend)
    for _ in range(3):
        graph.replay()
        adam_step_(ref[0], g, ref[1], ref[2], ref[3], active, lr=lr, backend="torch")
    torch.cuda.synchronize()
    torch.testing.assert_close(z, ref[0], rtol=1e-5, atol=1e-6)
    assert torch.equal(step, ref[3])


def _state(B=3, D=4, dtype=torch.float32):
    z = torch.rand(B, D, dtype=dtype)
    return [z, torch.rand(B, D, dtype=dtype), torch.zeros(B, D, dtype=dtype), torch.zeros(B, D, dtype=dtype),
            torch.zeros(B, dtype=torch.int64), torch.ones(B, dtype=torch.bool)]


def _bad(i, t):
    s = _state()
    s[i] = t
    return s


BAD = [
    (lambda: _bad(0, torch.rand(3, 4, dtype=torch.float16)), {}, TypeError, "z must be float32 or float64"),
    (lambda: _bad(0, torch.rand(3, 4, 1)), {}, ValueError, r"z must be \(B, D\)"),
    (lambda: _bad(1, torch.rand(3, 5)), {}, ValueError, "grad must have z's shape"),
    (lambda: _bad(2, torch.zeros(3, 4, dtype=torch.float64)), {}, TypeError, "exp_avg must have z's dtype"),
    (lambda: _bad(3, torch.zeros(3, 4, device="meta")), {}, ValueError, "exp_avg_sq must be on z's device"),
    (lambda: _bad(4, torch.zeros(3, dtype=torch.int32)), {}, TypeError, "step must be int64"),
    (lambda: _bad(4, torch.zeros(2, dtype=torch.int64)), {}, ValueError, r"step must be \(3,\)"),
    (lambda: _bad(5, torch.ones(3)), {}, TypeError, "active must be bool"),
    (lambda: _bad(5, torch.ones(3, 1, dtype=torch.bool)), {}, ValueError, r"active must be \(3,\)"),
    (lambda: _bad(1, [[0.0] * 4] * 3), {}, TypeError, "grad must be a torch.Tensor"),
    (lambda: _bad(0, torch.zeros(1, 4).expand(3, 4)), {}, ValueError, "must not overlap itself"),
    (lambda: _state(), {"lr": -0.1}, ValueError, "lr must be"),
    (lambda: _state(), {"lr": float("inf")}, ValueError, "lr must be"),
    (lambda: _state(), {"lr": torch.ones(2)}, ValueError, r"lr as a tensor must be \(3,\)"),
    (lambda: _state(), {"lr": torch.ones(3, dtype=torch.int64)}, TypeError, "lr as a tensor must be float32"),
    (lambda: _state(), {"betas": (0.9, 1.0)}, ValueError, "betas"),
    (lambda: _state(), {"betas": (-0.1, 0.9)}, ValueError, "betas"),
    (lambda: _state(), {"betas": 0.9}, TypeError, "betas must be a pair"),
    (lambda: _state(), {"eps": -1e-8}, ValueError, "eps must be"),
]


@pytest.mark.parametrize("make,kwargs,exc,msg", BAD)
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_bad_input_is_a_clear_error(make, kwargs, exc, msg, backend):
    skip_unless_backend(backend, "cpu")
    s = make()
    kwargs = {"lr": 0.01, **kwargs}
    with pytest.raises(exc, match=msg):
        adam_step_(*s, backend=backend, **kwargs)


def test_cpp_op_checks_its_arguments():
    skip_unless_backend("cpp", "cpu")
    op = torch.ops.anomgan.adam_step
    s = _state()
    with pytest.raises(TypeError, match="lr_tensor must be float64"):
        op(*s, torch.ones(3), 0.0, 0.9, 0.999, 1e-8)
    with pytest.raises(ValueError, match="beta1 must be in"):
        op(*s, None, 0.1, 1.0, 0.999, 1e-8)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        op(*s, None, float("nan"), 0.9, 0.999, 1e-8)
    with pytest.raises(ValueError, match=r"step must be \(B,\)"):
        op(*s[:4], torch.zeros(4, dtype=torch.int64), s[5], None, 0.1, 0.9, 0.999, 1e-8)


def test_opcheck_cpp_op():
    skip_unless_backend("cpp", "cpu")
    s = _state(B=4, D=6)
    s[1] = torch.randn(4, 6)
    s[5] = torch.tensor([True, False, True, True])
    utils = ("test_schema", "test_faketensor")
    torch.library.opcheck(torch.ops.anomgan.adam_step.default, (*s, None, 0.01, 0.9, 0.999, 1e-8), test_utils=utils)
    torch.library.opcheck(torch.ops.anomgan.adam_step.default,
                          (*s, torch.rand(4, dtype=torch.float64), 0.0, 0.9, 0.999, 1e-8), test_utils=utils)
