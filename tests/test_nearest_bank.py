"""The patch term's pruned nearest-bank search (anomgan.scoring.nearest_bank) against the plain
search in float64: clustered data where the pruning drops most positions, odd shapes (one
position, one bank entry, banks smaller than / not a multiple of a block, chunks that do not
divide the batch), ties, dtypes, non-contiguous input, and the errors."""
import pytest
import torch

from anomgan.scoring import nearest_bank
from anomgan.scoring.nearest_bank import max_nearest_distance, max_nearest_distance_reference


def _clustered(n, p, b, d, seed, outliers=True):
    """Bank entries and patches from one smooth distribution (a 4-D latent mapped into D
    dimensions, plus a little noise: normal images' patches lie among the training normals'),
    with a few positions pushed off it in some images (as a defect's)."""
    gen = torch.Generator().manual_seed(seed)
    lift = torch.randn(4, d, generator=gen)
    draw = lambda *shape: torch.randn(*shape, 4, generator=gen) @ lift + 0.05 * torch.randn(*shape, d, generator=gen)  # noqa: E731
    bank, patches = draw(b), draw(n, p)
    if outliers:
        far = torch.rand(n, p, generator=gen) < 0.02
        patches[far] += 2 * torch.randn(int(far.sum()), d, generator=gen)
    return patches, bank


def _want(patches, bank):
    return torch.cdist(patches.double(), bank.double()[None]).amin(-1).amax(-1)


@pytest.mark.parametrize("n, p, b, d, block", [(7, 49, 3000, 32, 512), (3, 196, 5000, 112, 2048),
                                               (5, 1, 700, 8, 256), (2, 30, 1, 5, 4),
                                               (4, 13, 100, 3, 2048), (1, 64, 1025, 16, 1024),
                                               (2, 196, 40000, 112, 2048)])  # the library's default size
def test_equals_the_float64_search(n, p, b, d, block):
    patches, bank = _clustered(n, p, b, d, seed=n * 1000 + p)
    got = max_nearest_distance(patches, bank, block=block, chunk=3)
    assert got.dtype == torch.float32 and got.shape == (n,)
    torch.testing.assert_close(got.double(), _want(patches, bank), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["plain", "auto", "pruned"])
def test_every_method_equals_the_float64_search(method, monkeypatch):
    patches, bank = _clustered(5, 33, 2500, 16, seed=9)
    monkeypatch.setattr(nearest_bank, "PLAIN_ELEMENTS", 33 * 2500 * 2)  # plain: 2 images a GEMM
    got = max_nearest_distance(patches, bank, method=method, block=700)
    torch.testing.assert_close(got.double(), _want(patches, bank), rtol=1e-4, atol=1e-4)
    if method == "auto":  # the CPU's default is the pruned scan
        torch.testing.assert_close(got, max_nearest_distance(patches, bank, method="pruned", block=700))


def test_pruning_happens_and_stays_exact(monkeypatch):
    # count the rows the block scans read: most positions must be dropped after the first
    # block, and the answer must still be the exact one
    patches, bank = _clustered(6, 196, 8000, 32, seed=5)
    rows = []
    real = nearest_bank._sq_dist_min

    def counting(q, q2, bnk, b2):
        rows.append((q.shape[0], bnk.shape[0]))
        return real(q, q2, bnk, b2)

    monkeypatch.setattr(nearest_bank, "_sq_dist_min", counting)
    got = max_nearest_distance(patches, bank, block=1000, candidates=2, chunk=6)
    torch.testing.assert_close(got.double(), _want(patches, bank), rtol=1e-4, atol=1e-4)
    multiply_adds = sum(q * b for q, b in rows)
    assert multiply_adds < 0.25 * patches.shape[0] * patches.shape[1] * bank.shape[0], rows


def test_random_uncorrelated_data_and_ties():
    # no structure to prune on (every bound stays high): still exact
    gen = torch.Generator().manual_seed(1)
    patches, bank = torch.randn(5, 40, 6, generator=gen), torch.randn(900, 6, generator=gen)
    torch.testing.assert_close(max_nearest_distance(patches, bank, block=128).double(),
                               _want(patches, bank), rtol=1e-4, atol=1e-4)
    # every position at the same distance from its nearest entry (ties everywhere)
    bank = torch.eye(4).repeat(50, 1)
    patches = torch.eye(4)[torch.tensor([[0, 1, 2, 3, 0]] * 3)] * 2
    torch.testing.assert_close(max_nearest_distance(patches, bank, block=7),
                               torch.ones(3), rtol=1e-6, atol=1e-6)
    # a patch equal to a bank entry: distance 0, not NaN from rounding below zero
    got = max_nearest_distance(bank[None, :1] * 1.0, bank, block=16)
    assert torch.isfinite(got).all() and float(got[0]) < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtypes_and_non_contiguous_input(dtype):
    patches, bank = _clustered(4, 50, 600, 12, seed=2)
    p = patches.to(dtype).transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous view
    assert not p.is_contiguous()
    bk = bank.to(dtype)[::1].T.contiguous().T  # column-major bank
    assert not bk.is_contiguous()
    got = max_nearest_distance(p, bk, block=100)
    want = _want(p.double(), bk.double())
    tol = 1e-4 if dtype in (torch.float32, torch.float64) else 1e-3
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
    ref = max_nearest_distance_reference(p.double(), bk)
    torch.testing.assert_close(ref, want)


def test_empty_batch_and_errors():
    assert max_nearest_distance(torch.zeros(0, 4, 3), torch.zeros(2, 3)).shape == (0,)
    with pytest.raises(TypeError, match="patches must be a torch.Tensor"):
        max_nearest_distance([[1.0]], torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"patches must be a floating 3-D tensor \(N, P, D\)"):
        max_nearest_distance(torch.zeros(4, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="bank must be a floating 2-D"):
        max_nearest_distance(torch.zeros(1, 4, 3), torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="patch features have 3 values, the bank's entries 5"):
        max_nearest_distance(torch.zeros(1, 4, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="the bank is empty"):
        max_nearest_distance(torch.zeros(1, 4, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"P = 0"):
        max_nearest_distance(torch.zeros(1, 0, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="method must be 'auto', 'pruned' or 'plain', got 'fast'"):
        max_nearest_distance(torch.zeros(1, 4, 3), torch.zeros(2, 3), method="fast")
    for name in ("block", "candidates", "chunk"):
        with pytest.raises(ValueError, match=f"{name} must be an int >= 1, got 0"):
            max_nearest_distance(torch.zeros(1, 4, 3), torch.zeros(2, 3), **{name: 0})


@pytest.mark.parametrize("method", ["pruned", "plain"])
def test_a_non_finite_feature_gives_a_non_finite_distance_not_a_finite_guess(method):
    # the detector flags a non-finite score as anomalous: a NaN or inf patch feature must not be
    # pruned away into a finite answer
    gen = torch.Generator().manual_seed(0)
    patches, bank = torch.randn(3, 20, 8, generator=gen), torch.randn(500, 8, generator=gen)
    for bad in (float("nan"), float("inf")):
        q = patches.clone()
        q[1, 5, 2] = bad
        got = max_nearest_distance(q, bank, method=method, block=64)
        assert torch.isnan(got[1]) and torch.isfinite(got[[0, 2]]).all()
        torch.testing.assert_close(got[[0, 2]].double(), _want(q[[0, 2]], bank), rtol=1e-4, atol=1e-4)
    broken = bank.clone()
    broken[7, 1] = float("nan")
    assert torch.isnan(max_nearest_distance(patches, broken, method=method, block=64)).all()
