"""anomgan.data: MNIST files, samplers, augmentations (images in: test_ingest.py)."""
import gzip
import os

import numpy as np
import pytest
import torch

from anomgan import data as D

MNIST_NPZ = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist.npz")
for _cand in (MNIST_NPZ, "/work/shared/data/mnist.npz"):
    if os.path.isfile(_cand):
        MNIST_NPZ = _cand
        break


# ---------------------------------------------------------------------------------- MNIST
def test_idx_roundtrip_and_errors(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, (7,), dtype=np.uint8)
    D.write_idx(tmp_path / "train-images-idx3-ubyte.gz", x)
    D.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "train-images-idx3-ubyte.gz"), x)
    f = rng.random((3, 2)).astype(">f4")
    D.write_idx(tmp_path / "f.idx", f)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "f.idx"), f)
    imgs, labels = D.load_mnist(tmp_path, "train", image_size=32)
    assert imgs.shape == (7, 1, 32, 32) and labels.dtype == torch.int64
    assert labels.tolist() == y.astype(int).tolist()
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "trunc").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="trunc"):
        D.read_idx(tmp_path / "trunc")
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="junk.*magic"):
        D.read_idx(tmp_path / "junk")
    with pytest.raises(FileNotFoundError, match="t10k"):
        D.load_mnist(tmp_path, "test")


def test_npz_and_one_class_split(tmp_path):
    rng = np.random.default_rng(5)
    arrays = {"x_train": rng.integers(0, 256, (9, 28, 28), dtype=np.uint8), "y_train": np.arange(9) % 3,
              "x_test": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), "y_test": np.arange(4) % 3}
    np.savez(tmp_path / "m.npz", **arrays)
    x, y = D.load_mnist(tmp_path / "m.npz", "all")
    assert x.shape == (13, 1, 28, 28)
    np.testing.assert_array_equal(x[9:, 0].numpy(), arrays["x_test"] / np.float32(255))
    normal, anom, alab = D.one_class_split(x, y, 1)
    assert normal.shape[0] == 4 and anom.shape[0] == 9 and set(alab.tolist()) == {0, 2}
    with pytest.raises(ValueError, match="no image has label"):
        D.one_class_split(x, y, 7)
    np.savez(tmp_path / "bad.npz", x_train=arrays["x_train"])
    with pytest.raises(ValueError, match="y_train"):
        D.load_mnist(tmp_path / "bad.npz")


@pytest.mark.skipif(not os.path.isfile(MNIST_NPZ), reason="shared/data/mnist.npz is not on this machine")
def test_real_mnist_npz_and_idx_agree(tmp_path):
    x, y = D.load_mnist_arrays(MNIST_NPZ, "test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and set(np.unique(y)) == set(range(10))
    D.write_idx(tmp_path / "t10k-images-idx3-ubyte", x[:50])
    D.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y[:50].astype(np.uint8))
    a, la = D.load_mnist(tmp_path, "test")
    b = D.to_images(x[:50])
    assert torch.equal(a, b) and la.tolist() == y[:50].tolist()


# ---------------------------------------------------------------------------------- samplers
def test_epoch_batch_sampler_epochs_and_resume():
    s = D.EpochBatchSampler(10, 4, seed=3)
    batches = [s.next_batch() for _ in range(10)]          # 40 indices = 4 epochs
    flat = torch.cat(batches)
    for e in range(4):
        assert sorted(flat[10 * e:10 * e + 10].tolist()) == list(range(10))
    assert not torch.equal(flat[:10], flat[10:20])         # reshuffled each epoch
    # same seed -> same stream; other seed -> another one
    same, other = D.EpochBatchSampler(10, 4, seed=3), D.EpochBatchSampler(10, 4, seed=4)
    assert torch.equal(torch.cat([same.next_batch() for _ in range(10)]), flat)
    assert not torch.equal(torch.cat([other.next_batch() for _ in range(10)]), flat)
    # resume mid-epoch
    s2 = D.EpochBatchSampler(10, 4, seed=3)
    for _ in range(3):
        s2.next_batch()
    st = s2.state_dict()
    s3 = D.EpochBatchSampler(10, 4, seed=3)
    s3.load_state_dict(st)
    assert torch.equal(torch.cat([s3.next_batch() for _ in range(7)]), flat[12:])
    # a batch larger than the data set spans epochs
    big = D.EpochBatchSampler(3, 7, seed=0).next_batch()
    assert big.shape == (7,) and sorted(big[:3].tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="seed"):
        D.EpochBatchSampler(10, 4, seed=5).load_state_dict(st)
    with pytest.raises(ValueError, match="batch_size"):
        D.EpochBatchSampler(10, 0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        D.EpochBatchSampler(10, 2.0)


def _three_blobs(sizes, side=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs, truth = [], []
    for k, n in enumerate(sizes):
        base = torch.zeros(1, 1, side, side)
        base[..., :, (k * side) // len(sizes):((k + 1) * side) // len(sizes)] = 1.0
        xs.append((base + 0.02 * torch.rand(n, 1, side, side, generator=g)).clamp(0, 1))
        truth += [k] * n
    return torch.cat(xs), torch.tensor(truth)


def test_kmeans_sampler_balances_clusters():
    x, truth = _three_blobs([40, 8, 2])
    s = D.KMeansBalancedSampler(x, 10, n_clusters=3, epoch_size=60, seed=0)
    cl = s.clusters
    # the fitted clusters are the three blobs (up to renaming)
    for k in range(3):
        assert len(set(cl[truth == k].tolist())) == 1
    assert len(set(cl.tolist())) == 3
    epoch = torch.cat([s.next_batch() for _ in range(6)])
    counts = torch.bincount(truth[epoch], minlength=3)
    assert counts.tolist() == [20, 20, 20]                  # equal counts from each cluster
    small = truth[epoch] == 2                               # the 2-image cluster: each member 10 times
    assert sorted(torch.bincount(epoch[small]).tolist()[-2:]) == [10, 10]
    # per class: labels split the data first, equal counts per class
    labels = (torch.arange(50) % 2)
    s2 = D.KMeansBalancedSampler(x, 5, labels=labels, n_clusters=2, epoch_size=40, seed=1)
    e2 = torch.cat([s2.next_batch() for _ in range(8)])
    assert torch.bincount(labels[e2]).tolist() == [20, 20]
    # seeded and resumable, clusters travel in the state
    a = D.KMeansBalancedSampler(x, 10, n_clusters=3, epoch_size=60, seed=0)
    assert torch.equal(torch.cat([a.next_batch() for _ in range(6)]), epoch)
    st = s.state_dict()
    b = D.KMeansBalancedSampler(x, 10, n_clusters=3, epoch_size=60, seed=0)
    b.load_state_dict(st)
    assert b._clusters is not None and torch.equal(b.clusters, cl)
    assert torch.equal(b.next_batch(), s.next_batch())
    with pytest.raises(ValueError, match="labels"):
        D.KMeansBalancedSampler(x, 4, labels=torch.zeros(3, dtype=torch.int64))


# ---------------------------------------------------------------------------------- augment
def test_augment_transforms_are_the_papers():
    x = torch.rand(16, 1, 6, 6)
    out = D.Augment(hflip=True, vflip=True, rot90=True)(x, torch.Generator().manual_seed(0))
    allowed = []
    for i in range(16):
        cands = [torch.rot90(t, r, dims=(-2, -1)) for t in (x[i], x[i].flip(-1), x[i].flip(-2), x[i].flip(-1).flip(-2))
                 for r in range(4)]
        allowed.append(any(torch.equal(out[i], c) for c in cands))
    assert all(allowed)
    assert not torch.equal(out, x)
    again = D.Augment(hflip=True, vflip=True, rot90=True)(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    # a shard of a batch is transformed as in the whole batch
    full = D.Augment(hflip=True, rot90=True, pad_crop=1, crop=1)(x, torch.Generator().manual_seed(4))
    part = D.Augment(hflip=True, rot90=True, pad_crop=1, crop=1)(x[8:12], torch.Generator().manual_seed(4),
                                                                 total=16, offset=8)
    assert torch.equal(part, full[8:12])
    with pytest.raises(ValueError, match="total"):
        D.Augment(hflip=True)(x, torch.Generator(), total=8)
    # pad_crop: every output is a window of the reflect-padded input
    p = D.Augment(pad_crop=2)(x, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(16):
        assert any(torch.equal(p[i], padded[i, :, dy:dy + 6, dx:dx + 6]) for dy in range(5) for dx in range(5))
    # crop: same shape, values in range; crop=0 / nothing enabled is the identity
    c = D.Augment(crop=2)(x, torch.Generator().manual_seed(2))
    assert c.shape == x.shape and c.min() >= 0 and c.max() <= 1
    assert torch.equal(D.Augment()(x, torch.Generator()), x) and not D.Augment()
    with pytest.raises(ValueError, match="square"):
        D.Augment(rot90=True)(torch.rand(1, 1, 4, 6), torch.Generator())
    with pytest.raises(ValueError, match="crop"):
        D.Augment(crop=-1)
    with pytest.raises(TypeError, match="Augment: pad_crop must be an int"):
        D.Augment(pad_crop=1.5)


FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_idx_gz():
    x, y = D.load_mnist(FASHION, "test", image_size=32)
    assert x.shape == (10000, 1, 32, 32) and x.dtype == torch.float32
    assert torch.bincount(y).tolist() == [1000] * 10
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0.1
