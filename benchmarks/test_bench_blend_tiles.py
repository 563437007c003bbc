"""blend_tiles_add: the C++ kernel side by side with the pure-PyTorch reference (CPU).

Case: the blending of a 2 x 1024 x 1024 detect with 64-px tiles overlapping by 16 (882 tiles,
the 1024 tiled detect case of test_bench_detect.py), added in chunks of 128 tiles as the
detector does. Bytes counted for the floor: maps read once, acc read and written once per tile
(float64).
"""
import pytest
import torch

from anomgan.ops import available_backends, blend_tiles_add
from anomgan.ops.blend_tiles import SUPPORTED
from anomgan.scoring.tiling import plan_tiles

from conftest import copy_bandwidth

CHUNK = 128


def _inputs():
    lay = plan_tiles(1024, 1024, 64, overlap=16, batch=2)
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(lay.n_tiles, 64, 64, generator=gen)
    ny = torch.rand(lay.n_tiles, 64, generator=gen, dtype=torch.float64)
    nx = torch.rand(lay.n_tiles, 64, generator=gen, dtype=torch.float64)
    return lay, maps, ny, nx, lay.index()


@pytest.mark.parametrize("backend", [b for b in available_backends("cpu") if b in SUPPORTED])
def test_blend_tiles_add(benchmark, record, backend):
    lay, maps, ny, nx, org = _inputs()

    def run():
        acc = torch.zeros(lay.batch, lay.height, lay.width, dtype=torch.float64)
        for s in range(0, lay.n_tiles, CHUNK):
            blend_tiles_add(acc, maps[s:s + CHUNK], ny[s:s + CHUNK], nx[s:s + CHUNK], org[s:s + CHUNK],
                            backend=backend)
        return acc

    assert torch.equal(run(), blend_tiles_add(torch.zeros(2, 1024, 1024, dtype=torch.float64), maps, ny, nx,
                                              org, backend="torch"))  # time only a right answer
    benchmark.group = "blend_tiles_add cpu 2x1024x1024, 882 tiles of 64"
    benchmark.pedantic(run, rounds=10, warmup_rounds=2)
    copy_bandwidth("cpu")
    record(benchmark.group, backend, benchmark, maps.numel() * (4 + 2 * 8), "cpu")
