"""Paths of the Triton patch_topn_l1 kernels that the shared tests' shapes do not reach:
selection split over many programs and chunks (then merged), ties across those programs,
NaN images among them, and n > 32 (top n by a stable sort in the launcher)."""
import pytest
import torch

from anomgan.ops import patch_topn_l1
from conftest import backend_device_params, skip_unless_backend
from test_patch_topn_l1 import oracle, rand_pair

BD = backend_device_params(("triton",))


def _tri():
    from anomgan.ops.triton import patch_topn_l1 as tri
    return tri


def _small_programs(monkeypatch):
    """Chunks of 16 windows and a target of 8 programs: for 3-5 images, 2-3 programs per image,
    each walking several chunks, and a merge of their candidate lists."""
    tri = _tri()
    monkeypatch.setattr(tri, "_WINDOW_BLOCK", 16)
    monkeypatch.setattr(tri, "_target_programs", lambda device: 8)
    return tri


@pytest.mark.parametrize("backend,device", BD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_selection_split_over_programs_keeps_ties_in_index_order(backend, device, dtype,
                                                                 monkeypatch):
    skip_unless_backend(backend, device)
    tri = _small_programs(monkeypatch)
    gen = torch.Generator().manual_seed(21)
    B, C, H, W, p, s, n = 3, 2, 20, 22, 4, 2, 3  # 9 x 10 windows: 6 chunks, 3 programs
    x = torch.zeros(B, C, H, W, dtype=dtype, device=device)
    # quarter steps: window sums are exact, so many window means tie exactly
    y = (torch.randint(0, 3, (B, C, H, W), generator=gen) / 4).to(device, dtype)
    y[2] = 0.5  # one image where every window ties
    scores, pmap, top_idx = tri.forward(x, y, p, s, n)
    ref_s, ref_m, ref_idx, _ = oracle(x.cpu(), y.cpu(), p, s, n)
    torch.testing.assert_close(pmap.cpu().double(), ref_m, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(scores.cpu().double(), ref_s, rtol=1e-6, atol=1e-7)
    assert top_idx.cpu().tolist() == ref_idx.tolist()
    assert top_idx[2].cpu().tolist() == [0, 1, 2]
    # the gradient of the selection follows the same indices
    g_scores = torch.randn(B, generator=gen, dtype=torch.float64)
    g_map = torch.randn(pmap.shape, generator=gen, dtype=torch.float64)
    x2, y2 = rand_pair((B, C, H, W), dtype, device, gen)
    s2, m2, idx2 = tri.forward(x2, y2, p, s, n)
    _, _, ref_idx2, ref_g = oracle(x2.cpu(), y2.cpu(), p, s, n, g_scores, g_map)
    assert idx2.cpu().tolist() == ref_idx2.tolist()
    od = s2.dtype
    grad = tri.backward(g_scores.to(device, od), g_map.to(device, od), x2, y2, idx2, p, s)
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad.cpu().double(), ref_g, **tol)


@pytest.mark.parametrize("backend,device", BD)
def test_nan_image_among_split_programs(backend, device, monkeypatch):
    skip_unless_backend(backend, device)
    tri = _small_programs(monkeypatch)
    gen = torch.Generator().manual_seed(22)
    x, y = rand_pair((5, 1, 20, 20), torch.float32, device, gen)
    x[2, 0, 17, 15] = float("nan")  # only the last windows of image 2 see it
    scores, _, top_idx = tri.forward(x, y, 4, 2, 3)
    assert torch.isnan(scores[2]) and not torch.isnan(scores[[0, 1, 3, 4]]).any()
    assert top_idx[2].cpu().tolist() == [0, 1, 2]
    keep = [0, 1, 3, 4]
    ref_s, _, ref_idx, _ = oracle(x[keep].cpu(), y[keep].cpu(), 4, 2, 3)
    torch.testing.assert_close(scores[keep].cpu().double(), ref_s, rtol=2e-5, atol=1e-6)
    assert top_idx[keep].cpu().tolist() == ref_idx.tolist()


@pytest.mark.parametrize("backend,device", BD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_large_n_uses_a_stable_sort(backend, device, dtype):
    skip_unless_backend(backend, device)
    gen = torch.Generator().manual_seed(23)
    B, C, H, W, p, s, n = 3, 2, 12, 13, 3, 1, 40  # 10 x 11 windows, n beyond the kernels' 32
    x = torch.zeros(B, C, H, W, dtype=dtype, device=device)
    y = (torch.randint(0, 3, (B, C, H, W), generator=gen) / 4).to(device, dtype)
    x[1, 1, 4, 4] = float("nan")
    y.requires_grad_(True)
    scores, pmap = patch_topn_l1(x, y, patch=p, stride=s, n=n, backend=backend)
    ref_s, ref_m, _, _ = oracle(x.cpu(), y.cpu(), p, s, n)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(pmap.cpu().double(), ref_m, equal_nan=True, **tol)
    torch.testing.assert_close(scores.cpu().double(), ref_s, equal_nan=True, **tol)
    _, _, top_idx = _tri().forward(x, y.detach(), p, s, n)
    ok = [0, 2]
    _, _, ref_idx, _ = oracle(x[ok].cpu(), y[ok].cpu(), p, s, n)
    assert top_idx[ok].cpu().tolist() == ref_idx.tolist()
    assert top_idx[1].cpu().tolist() == list(range(n))
    # gradient: the score's share goes to the sorted selection
    g_scores = torch.randn(B, generator=gen, dtype=torch.float64)
    g_map = torch.randn(pmap.shape, generator=gen, dtype=torch.float64)
    od = scores.dtype
    loss = ((scores[ok] * g_scores[ok].to(device, od)).sum()
            + (pmap[ok] * g_map[ok].to(device, od)).sum())
    (grad,) = torch.autograd.grad(loss, y)
    _, _, _, ref_g = oracle(x[ok].cpu(), y[ok].cpu(), p, s, n, g_scores[ok], g_map[ok])
    gt = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad[ok].cpu().double(), ref_g, **gt)
