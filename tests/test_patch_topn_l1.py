"""patch_topn_l1 on every backend against an independent float64 oracle (unfold + sort)."""
import pytest
import torch

from anomgan import ops
from anomgan.ops import BackendUnavailableError, patch_topn_l1, pixel_error_map
from anomgan.ops.patch_topn_l1 import SUPPORTED

from conftest import backend_device_params, skip_unless_backend

BD = backend_device_params(SUPPORTED)
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def oracle(x, y, patch, stride, n, g_scores=None, g_map=None):
    """float64 (scores, map, top_idx, grad_y): windows by unfold, top n by a stable sort
    (ties to the lowest flat index), gradient by autograd."""
    x = x.detach().double()
    y = y.detach().double().requires_grad_(True)
    e = (x - y).abs().mean(1, keepdim=True)
    cols = torch.nn.functional.unfold(e, patch, stride=stride)  # (B, p*p, L)
    B, H, W = x.shape[0], x.shape[2], x.shape[3]
    hp, wp = (H - patch) // stride + 1, (W - patch) // stride + 1
    pmap = cols.mean(1).view(B, hp, wp)
    order = torch.sort(pmap.detach().flatten(1), dim=1, descending=True, stable=True).indices
    top_idx = order[:, :n]
    scores = pmap.flatten(1).gather(1, top_idx).mean(1)
    grad = None
    if g_scores is not None:
        loss = (scores * g_scores.double()).sum() + (pmap * g_map.double()).sum()
        grad = torch.autograd.grad(loss, y)[0]
    return scores.detach(), pmap.detach(), top_idx, grad


def tol(dtype):
    # kernels accumulate in float32 (float64 for float64), so against the oracle on the same
    # (already rounded) inputs the error is accumulation error only
    return dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)


def rand_pair(shape, dtype, device, gen):
    x = torch.rand(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    y = torch.rand(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    return x, y


CASES = [  # (B, C, H, W, patch, stride, n)
    (2, 3, 97, 131, 16, 8, 3),
    (3, 1, 97, 131, 16, 8, 1),
    (1, 1, 16, 16, 16, 8, 1),  # exactly one window
    (1, 1, 1, 1, 1, 1, 1),  # one pixel
    (4, 3, 33, 20, 5, 3, 7),  # stride does not divide patch
    (2, 1, 30, 41, 4, 6, 2),  # stride > patch: gaps between windows
    (1, 2, 40, 40, 3, 1, 20),  # large n: the selection's other path
    (9, 1, 27, 33, 16, 8, 2),  # more images than tasks
]


@pytest.mark.parametrize("backend,device", BD)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_forward_and_gradient_match_oracle(backend, device, dtype, case):
    skip_unless_backend(backend, device)
    B, C, H, W, p, s, n = case
    gen = torch.Generator().manual_seed(hash(case) % 2**31)
    x, y = rand_pair((B, C, H, W), dtype, device, gen)
    y.requires_grad_(True)
    scores, pmap = patch_topn_l1(x, y, patch=p, stride=s, n=n, backend=backend)
    od = torch.float64 if dtype == torch.float64 else torch.float32
    assert scores.dtype == od and pmap.dtype == od
    assert scores.shape == (B,) and pmap.shape == (B, (H - p) // s + 1, (W - p) // s + 1)
    g_scores = torch.randn(B, generator=gen, dtype=torch.float64)
    g_map = torch.randn(pmap.shape, generator=gen, dtype=torch.float64)
    ref_s, ref_m, _, ref_g = oracle(x, y, p, s, n, g_scores, g_map)
    torch.testing.assert_close(scores.cpu().double(), ref_s, **tol(dtype))
    torch.testing.assert_close(pmap.cpu().double(), ref_m, **tol(dtype))
    loss = (scores * g_scores.to(device, od)).sum() + (pmap * g_map.to(device, od)).sum()
    (grad,) = torch.autograd.grad(loss, y)
    assert grad.dtype == dtype and grad.shape == y.shape
    gt = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else (
        dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-4))
    torch.testing.assert_close(grad.cpu().double(), ref_g, **gt)


@pytest.mark.parametrize("backend,device", BD)
def test_one_megapixel_image(backend, device):
    skip_unless_backend(backend, device)
    if backend == "triton" and device == "cpu":
        pytest.skip("triton on cpu runs in the interpreter: 1024x1024 is covered on a GPU")
    gen = torch.Generator().manual_seed(7)
    x, y = rand_pair((2, 1, 1024, 1024), torch.float32, device, gen)
    x[1, 0, 500:520, 300:310] += 3.0  # a defect: the selected windows must find it
    scores, pmap = patch_topn_l1(x, y, backend=backend)
    ref_s, ref_m, _, _ = oracle(x.cpu(), y.cpu(), 16, 8, 3)
    torch.testing.assert_close(scores.cpu().double(), ref_s, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(pmap.cpu().double(), ref_m, rtol=2e-5, atol=1e-6)
    assert pmap.shape == (2, 127, 127)
    assert scores[1] > scores[0] + 0.5


@pytest.mark.parametrize("backend,device", BD)
@pytest.mark.parametrize("layout", ["sliced", "channels_last", "transposed", "expanded"])
def test_non_contiguous_inputs(backend, device, layout):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(3)
    base_x, base_y = rand_pair((3, 3, 70, 90), torch.float32, device, gen)
    if layout == "sliced":
        x, y = base_x[:, :, 3:60:2, 5:], base_y[::1, :, 1:58:2, :-5]
    elif layout == "channels_last":
        x = base_x.contiguous(memory_format=torch.channels_last)
        y = base_y.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x, y = base_x.transpose(2, 3), base_y.transpose(2, 3)
    else:
        x, y = base_x[:1].expand(3, -1, -1, -1), base_y
    assert not x.is_contiguous()
    y = y.detach().requires_grad_(True)
    scores, pmap = patch_topn_l1(x, y, patch=8, stride=4, n=2, backend=backend)
    g_scores = torch.ones(3, dtype=torch.float64)
    ref_s, ref_m, _, ref_g = oracle(x.cpu(), y.cpu(), 8, 4, 2, g_scores, torch.zeros_like(ref_like(pmap)))
    torch.testing.assert_close(scores.cpu().double(), ref_s, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(pmap.cpu().double(), ref_m, rtol=2e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(scores.sum(), y)
    torch.testing.assert_close(grad.cpu().double(), ref_g, rtol=1e-5, atol=1e-7)


def ref_like(t):
    return t.detach().cpu().double()


@pytest.mark.parametrize("backend,device", BD)
def test_ties_pick_the_lowest_window_index(backend, device):
    skip_unless_backend(backend, device)
    # a constant error: every window mean ties; then two equal bright windows
    x = torch.zeros(2, 1, 24, 24, device=device)
    y = torch.full((2, 1, 24, 24), 0.25, device=device)
    y[1, 0, 0:8, 16:24] = 1.0
    y[1, 0, 16:24, 0:8] = 1.0
    y.requires_grad_(True)
    scores, pmap = patch_topn_l1(x, y, patch=8, stride=8, n=1, backend=backend)
    torch.testing.assert_close(scores.cpu(), torch.tensor([0.25, 1.0]))
    (grad,) = torch.autograd.grad(scores.sum(), y)
    _, _, idx, ref_g = oracle(x.cpu(), y.cpu(), 8, 8, 1, torch.ones(2), torch.zeros(2, 3, 3))
    assert idx.tolist() == [[0], [2]]
    if backend != "torch":  # topk's order among ties is unspecified; the kernels' rule is not
        torch.testing.assert_close(grad.cpu().double(), ref_g)


@pytest.mark.parametrize("backend,device", BD)
def test_equal_pixels_get_zero_gradient(backend, device):
    skip_unless_backend(backend, device)
    x = torch.rand(1, 2, 16, 16, device=device)
    y = x.clone().requires_grad_(True)
    scores, _ = patch_topn_l1(x, y, patch=4, stride=4, n=2, backend=backend)
    (grad,) = torch.autograd.grad(scores.sum(), y)
    assert scores.item() == 0.0
    assert torch.count_nonzero(grad).item() == 0


@pytest.mark.parametrize("backend,device", BD)
def test_nan_poisons_only_its_own_image(backend, device):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(11)
    x, y = rand_pair((3, 1, 32, 32), torch.float32, device, gen)
    x[1, 0, 5, 7] = float("nan")
    scores, _ = patch_topn_l1(x, y, backend=backend)
    ref_s, _, _, _ = oracle(x[[0, 2]].cpu(), y[[0, 2]].cpu(), 16, 8, 3)
    assert torch.isnan(scores[1])
    torch.testing.assert_close(scores[[0, 2]].cpu().double(), ref_s, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("backend,device", BD)
def test_gradient_wrt_x_is_minus_gradient_wrt_y(backend, device):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(5)
    x, y = rand_pair((2, 1, 20, 20), torch.float64, device, gen)
    x.requires_grad_(True)
    y.requires_grad_(True)
    scores, pmap = patch_topn_l1(x, y, patch=6, stride=2, n=2, backend=backend)
    gx, gy = torch.autograd.grad(scores.sum() + pmap.sum(), (x, y))
    torch.testing.assert_close(gx, -gy)


@pytest.mark.parametrize("backend,device", BD)
def test_gradcheck_float64(backend, device):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(2)
    # Triton on the CPU runs in its interpreter (tens of ms a launch): a smaller case and
    # gradcheck's fast mode (random projections) keep it to seconds; elsewhere the full Jacobian.
    interp = backend == "triton" and device == "cpu"
    x, y = rand_pair((1, 2, 6, 7) if interp else (2, 2, 9, 11), torch.float64, device, gen)
    y.requires_grad_(True)
    # |x - y| has a kink at x == y; random inputs keep every pixel far from it for eps=1e-6
    assert (x - y).abs().min() > 1e-4

    def f(yy):
        s, m = patch_topn_l1(x, yy, patch=4, stride=3 if not interp else 2, n=2, backend=backend)
        return s, m

    assert torch.autograd.gradcheck(f, (y,), eps=1e-6, atol=1e-7, fast_mode=interp)


def test_pixel_error_map_matches_definition():
    gen = torch.Generator().manual_seed(1)
    x, y = rand_pair((2, 3, 5, 7), torch.float16, "cpu", gen)
    e = pixel_error_map(x, y)
    assert e.dtype == torch.float32 and e.shape == (2, 5, 7)
    torch.testing.assert_close(e.double(), (x.double() - y.double()).abs().mean(1))


@pytest.mark.parametrize("backend,device", BD)
def test_empty_batch(backend, device):
    skip_unless_backend(backend, device)
    x = torch.rand(0, 1, 32, 32, device=device)
    scores, pmap = patch_topn_l1(x, x.clone(), backend=backend)
    assert scores.shape == (0,) and pmap.shape == (0, 3, 3)


BAD = [
    (lambda: (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9)), {}, ValueError, "same shape"),
    (lambda: (torch.rand(1, 8, 8), torch.rand(1, 8, 8)), {}, ValueError, "4 dimensions"),
    (lambda: (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)), {"patch": 9}, ValueError, "patch"),
    (lambda: (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)), {"patch": 0}, ValueError, "patch"),
    (lambda: (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)), {"patch": 4, "stride": 0}, ValueError, "stride"),
    (lambda: (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)), {"patch": 4, "n": 0}, ValueError, "n must"),
    (lambda: (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)), {"patch": 4, "stride": 4, "n": 5}, ValueError, "number of windows"),
    (lambda: (torch.ones(1, 1, 8, 8, dtype=torch.int32),) * 2, {"patch": 4}, TypeError, "int32"),
    (lambda: (torch.ones(1, 1, 8, 8, dtype=torch.complex64),) * 2, {"patch": 4}, TypeError, "complex64"),
    (lambda: (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8, dtype=torch.float64)), {"patch": 4}, TypeError, "same dtype"),
    (lambda: (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8, device="meta")), {"patch": 4}, ValueError, "same device"),
    (lambda: (torch.rand(1, 1, 8, 8).numpy(), torch.rand(1, 1, 8, 8)), {"patch": 4}, TypeError, "torch.Tensor"),
    (lambda: (torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)), {"patch": 4.0}, TypeError, "patch"),
    (lambda: (torch.rand(1, 0, 8, 8), torch.rand(1, 0, 8, 8)), {"patch": 4}, ValueError, "channel"),
]


@pytest.mark.parametrize("make,kwargs,exc,msg", BAD)
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_bad_input_is_a_clear_error(make, kwargs, exc, msg, backend):
    skip_unless_backend(backend, "cpu")
    x, y = make()
    with pytest.raises(exc, match=msg):
        patch_topn_l1(x, y, backend=backend, **kwargs)


def test_cpp_op_checks_its_arguments_before_touching_memory():
    skip_unless_backend("cpp", "cpu")
    op = torch.ops.anomgan.patch_topn_l1_fwd
    with pytest.raises(ValueError, match="unit-stride"):
        op(torch.rand(1, 1, 8, 8).transpose(2, 3), torch.rand(1, 1, 8, 8), 4, 4, 1)
    with pytest.raises(ValueError, match="n must be"):
        op(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), 4, 4, 9)
    with pytest.raises(TypeError, match="float32"):
        op(torch.ones(1, 1, 8, 8, dtype=torch.int64), torch.ones(1, 1, 8, 8, dtype=torch.int64), 4, 4, 1)
    bwd = torch.ops.anomgan.patch_topn_l1_bwd
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="top_idx must hold window indices"):
        bwd(torch.ones(1), torch.zeros(1, 2, 2), x, x, torch.tensor([[99]]), 4, 4)
    with pytest.raises(ValueError, match="g_map"):
        bwd(torch.ones(1), torch.zeros(1, 3, 2), x, x, torch.tensor([[0]]), 4, 4)


def test_backend_choice(monkeypatch):
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(BackendUnavailableError, match="unknown backend 'bogus'"):
        patch_topn_l1(x, x, backend="bogus")
    with pytest.raises(BackendUnavailableError, match="CUDA tensors only"):
        patch_topn_l1(x, x, backend="cuda")
    monkeypatch.setenv("ANOMGAN_BACKEND", "bogus2")
    with pytest.raises(BackendUnavailableError, match="ANOMGAN_BACKEND='bogus2'"):
        patch_topn_l1(x, x)
    monkeypatch.setenv("ANOMGAN_BACKEND", "torch")
    patch_topn_l1(x, x)
    assert "torch" in ops.available_backends()
    assert set(ops.available_backends("cpu")) <= {"torch", "cpp", "triton"}


def test_default_backend_on_cpu_is_cpp_when_built(monkeypatch):
    monkeypatch.delenv("ANOMGAN_BACKEND", raising=False)
    want = "cpp" if _cpp_ok() else "torch"
    assert ops._backends.resolve_backend(None, torch.device("cpu"), "op") == want


def _cpp_ok():
    return ops._backends.why_unavailable("cpp", "cpu") is None


def test_opcheck_cpp_ops():
    skip_unless_backend("cpp", "cpu")
    gen = torch.Generator().manual_seed(0)
    x, y = rand_pair((2, 3, 20, 18), torch.float32, "cpu", gen)
    torch.library.opcheck(torch.ops.anomgan.patch_topn_l1_fwd.default, (x, y, 6, 3, 2),
                          test_utils=("test_schema", "test_faketensor"))
    s, m, idx = torch.ops.anomgan.patch_topn_l1_fwd(x, y, 6, 3, 2)
    torch.library.opcheck(torch.ops.anomgan.patch_topn_l1_bwd.default,
                          (torch.ones_like(s), torch.zeros_like(m), x, y, idx, 6, 3),
                          test_utils=("test_schema", "test_faketensor"))


def test_torch_compile_traces_the_cpp_op():
    skip_unless_backend("cpp", "cpu")
    gen = torch.Generator().manual_seed(4)
    x, y = rand_pair((2, 1, 32, 32), torch.float32, "cpu", gen)

    def score(a, b):
        return patch_topn_l1(a, b, patch=8, stride=4, n=3, backend="cpp")[0] * 2.0

    compiled = torch.compile(score, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, y), score(x, y))
