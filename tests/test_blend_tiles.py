"""blend_tiles_add (anomgan/ops/blend_tiles.py): every backend against a float64 loop oracle,
bit-identical backends, odd shapes, dtypes, non-contiguous inputs, and the argument checks."""
import pytest
import torch

from anomgan.ops import available_backends, blend_tiles_add, blend_tiles_add_reference
from anomgan.ops.blend_tiles import SUPPORTED

BACKENDS = [b for b in available_backends("cpu") if b in SUPPORTED]  # torch, and cpp when built


def _oracle(acc, maps, ny, nx, origins):
    out = acc.clone()
    for k in range(maps.shape[0]):
        b, y, x = origins[k].tolist()
        t = maps.shape[1]
        out[b, y:y + t, x:x + t] += (maps[k].double() * ny[k][:, None]) * nx[k][None, :]
    return out


def _case(B, H, W, n, t, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, t, t, generator=g).to(dtype)
    ny = torch.rand(n, t, generator=g, dtype=torch.float64)
    nx = torch.rand(n, t, generator=g, dtype=torch.float64)
    origins = torch.stack([torch.randint(0, B, (n,), generator=g), torch.randint(0, H - t + 1, (n,), generator=g),
                           torch.randint(0, W - t + 1, (n,), generator=g)], 1)
    acc = torch.rand(B, H, W, generator=g, dtype=torch.float64)
    return acc, maps, ny, nx, origins


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,H,W,n,t", [(1, 1, 1, 1, 1), (2, 37, 53, 40, 7), (3, 64, 64, 9, 64), (1, 70, 19, 25, 19),
                                       (2, 200, 130, 300, 16)])
def test_matches_a_loop_oracle_exactly(backend, dtype, B, H, W, n, t):
    """Overlapping tiles at random places, many covering one pixel: tile order is kept, so the
    result equals the sequential float64 loop exactly."""
    acc, maps, ny, nx, org = _case(B, H, W, n, t, dtype, seed=n + t)
    want = _oracle(acc, maps, ny, nx, org)
    got = blend_tiles_add(acc.clone(), maps, ny, nx, org, backend=backend)
    assert torch.equal(got, want)


def test_backends_agree_bitwise_and_on_non_contiguous_inputs():
    acc, maps, ny, nx, org = _case(2, 90, 77, 60, 12, seed=3)
    want = blend_tiles_add_reference(acc.clone(), maps, ny, nx, org)
    maps_nc = maps.transpose(1, 2).contiguous().transpose(1, 2)        # same values, other strides
    ny_nc = torch.stack([ny, ny], 2)[..., 0]
    org_nc = torch.cat([org, org], 1)[:, :3]
    for be in BACKENDS:
        got = blend_tiles_add(acc.clone(), maps_nc, ny_nc, nx, org_nc, backend=be)
        assert torch.equal(got, want), be


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_tiles_and_untouched_pixels(backend):
    acc = torch.full((1, 8, 8), 2.5, dtype=torch.float64)
    empty = blend_tiles_add(acc, torch.zeros(0, 3, 3), torch.zeros(0, 3, dtype=torch.float64),
                            torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.int64),
                            backend=backend)
    assert torch.equal(empty, torch.full((1, 8, 8), 2.5, dtype=torch.float64))
    one = blend_tiles_add(acc.clone(), torch.ones(1, 3, 3), torch.ones(1, 3, dtype=torch.float64),
                          torch.ones(1, 3, dtype=torch.float64), torch.tensor([[0, 5, 5]]), backend=backend)
    assert one[0, 5:, 5:].eq(3.5).all() and one[0, :5].eq(2.5).all() and one[0, :, :5].eq(2.5).all()


def _bad_cases():
    acc, maps, ny, nx, org = _case(2, 20, 20, 4, 5)
    return {
        "acc float32": ((acc.float(), maps, ny, nx, org), TypeError, "acc must be float64"),
        "acc not contiguous": ((acc.transpose(1, 2), maps, ny, nx, org), ValueError, "contiguous"),
        "maps int": ((acc, maps.long(), ny, nx, org), TypeError, "maps must be float32 or float64"),
        "maps not square": ((acc, maps[:, :, :4], ny, nx, org), ValueError, r"\(n, t, t\)"),
        "ny float32": ((acc, maps, ny.float(), nx, org), TypeError, "ny must be float64"),
        "nx shape": ((acc, maps, ny, nx[:, :4], org), ValueError, "nx must be"),
        "origins int32": ((acc, maps, ny, nx, org.int()), TypeError, "origins must be int64"),
        "origins shape": ((acc, maps, ny, nx, org[:, :2]), ValueError, "origins must be"),
        "tile past the edge": ((acc, maps, ny, nx, torch.tensor([[0, 0, 0]] * 3 + [[1, 16, 0]])), ValueError,
                               "tile 3 .* does not lie inside"),
        "negative image": ((acc, maps, ny, nx, torch.tensor([[0, 0, 0]] * 3 + [[-1, 0, 0]])), ValueError,
                           "tile 3"),
        "image past the batch": ((acc, maps, ny, nx, torch.tensor([[2, 0, 0]] * 4)), ValueError, "tile 0"),
        "tile larger than acc": ((acc[:, :4, :4].contiguous(), maps, ny, nx, torch.zeros(4, 3, dtype=torch.int64)),
                                 ValueError, "do not fit"),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(_bad_cases()))
def test_bad_arguments_are_refused_before_anything_is_written(backend, case):
    args, exc, match = _bad_cases()[case]
    before = args[0].clone()
    with pytest.raises(exc, match=match):
        blend_tiles_add(*args, backend=backend)
    assert torch.equal(args[0], before)


def test_the_cpp_kernel_checks_its_arguments_itself():
    """The C++ op refuses a tile outside acc on its own (a caller that skips the Python front
    gets an error, never an out-of-bounds write)."""
    if "cpp" not in BACKENDS:
        pytest.skip("needs the compiled extension anomgan._C")
    acc, maps, ny, nx, _ = _case(1, 10, 10, 2, 4)
    with pytest.raises(ValueError, match="does not lie inside"):
        torch.ops.anomgan.blend_tiles_add(acc, maps, ny, nx, torch.tensor([[0, 0, 0], [0, 7, 0]]))
    with pytest.raises(TypeError, match="acc must be float64"):
        torch.ops.anomgan.blend_tiles_add(acc.float(), maps, ny, nx, torch.zeros(2, 3, dtype=torch.int64))


def test_opcheck():
    if "cpp" not in BACKENDS:
        pytest.skip("needs the compiled extension anomgan._C")
    acc, maps, ny, nx, org = _case(2, 30, 30, 6, 8)
    torch.library.opcheck(torch.ops.anomgan.blend_tiles_add.default, (acc, maps, ny, nx, org),
                          test_utils=("test_schema", "test_faketensor"))
