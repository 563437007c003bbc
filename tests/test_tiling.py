"""Tiles of large images and blending of per-tile maps back to full resolution."""
import pytest
import torch

from anomgan.scoring.tiling import WINDOWS, blend_tiles, cut_tiles, plan_tiles, tile_starts, tiled_apply


def _first_channel(q):
    """A stand-in model: tile score = mean, tile map = the tile's first channel."""
    return q.mean((1, 2, 3)), q[:, 0]


@pytest.mark.parametrize("length,tile,stride", [(64, 64, 48), (100, 64, 48), (65, 64, 1),
                                                (1024, 64, 48), (7, 3, 3), (10, 4, 2)])
def test_tile_starts_cover_and_end_flush(length, tile, stride):
    st = tile_starts(length, tile, stride)
    assert st[0] == 0 and st[-1] == length - tile
    assert all(0 < b - a <= stride for a, b in zip(st, st[1:]))
    covered = torch.zeros(length, dtype=torch.bool)
    for s in st:
        covered[s:s + tile] = True
    assert covered.all()


def test_cut_tiles_index_and_content():
    g = torch.Generator().manual_seed(0)
    im = torch.rand(2, 3, 37, 45, generator=g)
    tiles, lay = cut_tiles(im, 16, stride=10)
    assert lay.ys == (0, 10, 20, 21) and lay.xs == (0, 10, 20, 29)
    idx = lay.index()
    assert tiles.shape == (2 * 16, 3, 16, 16) and idx.shape == (32, 3)
    for k, (b, y, x) in enumerate(idx.tolist()):
        assert torch.equal(tiles[k], im[b, :, y:y + 16, x:x + 16])
    assert idx[:16, 0].eq(0).all() and idx[16:, 0].eq(1).all()  # image-major order


@pytest.mark.parametrize("window", WINDOWS)
def test_identity_when_image_is_one_tile(window):
    im = torch.rand(3, 1, 32, 32)
    tiles, lay = cut_tiles(im, 32)
    assert lay.n_tiles == 3
    maps = torch.rand(3, 32, 32)
    assert torch.equal(blend_tiles(maps, lay, window=window), maps)
    assert torch.equal(blend_tiles(maps[:, None], lay, window=window), maps)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("c", [0.0, 0.3, 1.0, 0.123456789])
def test_constant_maps_blend_to_the_constant(window, c):
    lay = plan_tiles(50, 77, 16, overlap=7, batch=2)
    maps = torch.full((lay.n_tiles, 16, 16), c)
    out = blend_tiles(maps, lay, window=window)
    assert out.shape == (2, 50, 77) and out.dtype == torch.float32
    assert torch.equal(out, torch.full_like(out, c))


@pytest.mark.parametrize("window", WINDOWS)
def test_blending_tiles_of_a_map_gives_the_map(window):
    im = torch.rand(2, 1, 53, 41, dtype=torch.float64)
    tiles, lay = cut_tiles(im, 16, overlap=8)
    out = blend_tiles(tiles[:, 0], lay, window=window)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, im[:, 0], rtol=0, atol=1e-12)


def test_hann_weights_overlap_blend():
    # two tiles along x: the overlap is a weighted mean with the Hann windows
    lay = plan_tiles(4, 6, 4, stride=2)
    assert lay.xs == (0, 2) and lay.ys == (0,)
    maps = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)]).double()
    out = blend_tiles(maps, lay)[0, 0]
    w = torch.sin(torch.pi * (torch.arange(4, dtype=torch.float64) + 0.5) / 4) ** 2
    # columns 2, 3 are covered by tile 0 (window w[2], w[3]) and tile 1 (w[0], w[1])
    want = torch.tensor([0.0, 0.0, w[0] / (w[0] + w[2]), w[1] / (w[1] + w[3]), 1.0, 1.0],
                        dtype=torch.float64)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-15)


def test_planted_spot_lands_in_place():
    im = torch.zeros(2, 3, 90, 70)
    im[1, :, 61:64, 12:15] = 1.0   # a 3x3 spot on image 1 only
    scores, maps = tiled_apply(_first_channel, im, 32, overlap=12, max_tiles=5)
    assert maps.shape == (2, 90, 70)
    assert maps[0].abs().max() == 0
    hot = (maps[1] > 0.5).nonzero()
    assert hot[:, 0].unique().tolist() == [61, 62, 63] and hot[:, 1].unique().tolist() == [12,
                                                                                         13, 14]
    torch.testing.assert_close(maps, im[:, 0], rtol=0, atol=1e-6)
    # tile scores in tile order: only tiles containing the spot score > 0
    lay = plan_tiles(90, 70, 32, overlap=12, batch=2)
    assert scores.shape == (2, lay.tiles_per_image)
    for k in range(lay.tiles_per_image):
        _, y, x = lay.position(k)
        has = y <= 63 and y + 32 > 61 and x <= 14 and x + 32 > 12
        assert (scores[1, k] > 0) == has and scores[0, k] == 0


def test_round_trip_1024_with_64_tiles():
    g = torch.Generator().manual_seed(1)
    im = torch.rand(1, 1, 1024, 1024, generator=g)
    calls = []

    def fn(q):
        calls.append(q.shape[0])
        return _first_channel(q)

    scores, maps = tiled_apply(fn, im, 64, max_tiles=200)
    assert maps.shape == (1, 1024, 1024) and maps.dtype == torch.float32
    torch.testing.assert_close(maps, im[:, 0], rtol=0, atol=1e-6)
    lay = plan_tiles(1024, 1024, 64)  # default overlap 16, stride 48
    assert sum(calls) == lay.n_tiles == 21 * 21 and max(calls) <= 200
    assert scores.shape == (1, 441)


def test_chunking_does_not_change_the_result():
    im = torch.rand(3, 3, 40, 50)
    s1, m1 = tiled_apply(_first_channel, im, 16, stride=9, max_tiles=1)
    s2, m2 = tiled_apply(_first_channel, im, 16, stride=9, max_tiles=10_000)
    assert torch.equal(s1, s2) and torch.equal(m1, m2)


@pytest.mark.parametrize("pad", ["replicate", "reflect"])
def test_padding_small_images(pad):
    im = torch.rand(2, 1, 20, 40)
    scores, maps = tiled_apply(_first_channel, im, 32, pad=pad)
    assert maps.shape == (2, 20, 40)
    torch.testing.assert_close(maps, im[:, 0], rtol=0, atol=1e-6)
    tiles, lay = cut_tiles(im, 32, pad=pad)
    assert (lay.padded_height, lay.padded_width) == (32, 40) and tiles.shape[-2:] == (32, 32)


def test_errors():
    im = torch.rand(1, 1, 20, 40)
    with pytest.raises(ValueError, match="smaller than the tile size 32"):
        cut_tiles(im, 32)
    with pytest.raises(ValueError, match="reflect"):
        cut_tiles(torch.rand(1, 1, 10, 40), 32, pad="reflect")
    with pytest.raises(ValueError, match="pad must be"):
        cut_tiles(im, 8, pad="zeros")
    with pytest.raises(ValueError, match="stride must be <= tile"):
        plan_tiles(40, 40, 8, stride=9)
    with pytest.raises(ValueError, match="overlap must be < tile"):
        plan_tiles(40, 40, 8, overlap=8)
    with pytest.raises(ValueError, match="not both"):
        plan_tiles(40, 40, 8, overlap=2, stride=6)
    with pytest.raises(TypeError, match="tile must be an int"):
        plan_tiles(40, 40, 8.0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        cut_tiles(torch.rand(20, 40), 8)
    _, lay = cut_tiles(im, 8)
    with pytest.raises(ValueError, match=r"tile maps must have shape \(" + str(lay.n_tiles)):
        blend_tiles(torch.rand(lay.n_tiles - 1, 8, 8), lay)
    with pytest.raises(TypeError, match="floating-point"):
        blend_tiles(torch.zeros(lay.n_tiles, 8, 8, dtype=torch.int64), lay)
    with pytest.raises(ValueError, match="window must be"):
        blend_tiles(torch.rand(lay.n_tiles, 8, 8), lay, window="gauss")
    with pytest.raises(ValueError, match="must return 3 scores"):
        tiled_apply(lambda q: (torch.zeros(1), q[:, 0]), im, 8, max_tiles=3)
    with pytest.raises(TypeError, match="must return \\(scores, maps\\)"):
        tiled_apply(lambda q: q[:, 0], im, 8)
