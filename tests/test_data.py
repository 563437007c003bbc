"""anomgan.data: arrays, image files, MNIST files, samplers, augmentations."""
import gzip
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from anomgan import data as D

MNIST_NPZ = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist.npz")
for _cand in (MNIST_NPZ, "/work/shared/data/mnist.npz"):
    if os.path.isfile(_cand):
        MNIST_NPZ = _cand
        break


# ---------------------------------------------------------------------------------- arrays
def test_to_images_layouts_and_dtypes():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)          # NHWC
    out = D.to_images(a)
    assert out.dtype == torch.float32 and out.shape == (5, 3, 7, 9)
    np.testing.assert_array_equal(out.permute(0, 2, 3, 1).numpy(), a.astype(np.float32) / 255)
    # NCHW torch uint8, (N, H, W) grey, (H, W) single
    t = torch.from_numpy(a).permute(0, 3, 1, 2)
    assert torch.equal(D.to_images(t), out)
    assert D.to_images(a[..., 0]).shape == (5, 1, 7, 9)
    assert D.to_images(a[0, ..., 0]).shape == (1, 1, 7, 9)
    # uint16 / bool / float
    b = rng.integers(0, 65536, (2, 1, 4, 4)).astype(np.uint16)
    np.testing.assert_allclose(D.to_images(b).numpy(), b.astype(np.float64) / 65535, rtol=1e-6)
    assert D.to_images(np.ones((1, 3, 3), bool)).min() == 1.0
    f = rng.random((2, 1, 4, 4))
    np.testing.assert_allclose(D.to_images(f).numpy(), f.astype(np.float32))


def test_to_images_never_aliases_input():
    x = torch.rand(2, 1, 4, 4)
    y = D.to_images(x)
    y.zero_()
    assert x.abs().sum() > 0


@pytest.mark.parametrize("bad, err, words", [
    (np.full((1, 4, 4), 1.5, np.float32), ValueError, "[0, 1]"),
    (np.full((1, 4, 4), np.nan, np.float32), ValueError, "NaN"),
    (np.zeros((1, 4, 4), np.int32), TypeError, "int32"),
    (np.zeros((1, 9, 9, 9), np.uint8), ValueError, "channel"),
    (np.zeros((0, 1, 4, 4), np.uint8), ValueError, "no images"),
    ([1, 2, 3], TypeError, "numpy array or a torch tensor"),
])
def test_to_images_rejects_bad_input(bad, err, words):
    with pytest.raises(err, match=None) as ei:
        D.to_images(bad, name="normal")
    assert words in str(ei.value) and "normal" in str(ei.value)


def test_channel_conversion_and_resize():
    rgb = torch.rand(3, 3, 8, 8)
    grey = D.to_images(rgb, channels=1)
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close(grey, (rgb * w).sum(1, keepdim=True))
    three = D.to_images(grey, channels=3)
    assert three.shape == (3, 3, 8, 8) and torch.equal(three[:, 0], three[:, 2])
    rgba = torch.rand(2, 4, 8, 8)
    assert torch.equal(D.to_images(rgba), rgba[:, :3])
    # resize: a constant image stays constant, shape is (h, w), values stay in [0, 1]
    const = torch.full((1, 1, 28, 28), 0.25)
    r = D.to_images(const, image_size=32)
    assert r.shape == (1, 1, 32, 32)
    torch.testing.assert_close(r, torch.full_like(r, 0.25))
    r2 = D.to_images(torch.rand(2, 1, 20, 30), image_size=(8, 16))
    assert r2.shape == (2, 1, 8, 16) and r2.min() >= 0 and r2.max() <= 1
    with pytest.raises(ValueError, match="channels"):
        D.to_images(rgb, channels=2)
    with pytest.raises(ValueError, match="image_size"):
        D.to_images(rgb, image_size=0)


# ---------------------------------------------------------------------------------- files
def _write(path, arr, **kw):
    Image.fromarray(arr).save(path, **kw)
    return path


def test_load_folder_formats_match_arrays(tmp_path):
    rng = np.random.default_rng(1)
    g8 = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    g16 = rng.integers(0, 65536, (12, 10)).astype(np.uint16)
    _write(tmp_path / "a.png", g8)
    _write(tmp_path / "b.png", g16)
    _write(tmp_path / "c.tif", g16)
    _write(tmp_path / "d.tiff", rgb)
    _write(tmp_path / "e.png", rgb)
    (tmp_path / "notes.txt").write_text("not an image")
    x = D.load_folder(tmp_path, channels=3)
    assert x.shape == (5, 3, 12, 10) and x.dtype == torch.float32
    np.testing.assert_array_equal(x[0, 1].numpy(), g8 / np.float32(255))
    np.testing.assert_allclose(x[1, 0].numpy(), g16 / 65535.0, rtol=1e-6)   # 16-bit PNG
    np.testing.assert_allclose(x[2, 0].numpy(), g16 / 65535.0, rtol=1e-6)   # 16-bit TIFF
    np.testing.assert_array_equal(x[3].permute(1, 2, 0).numpy(), rgb / np.float32(255))
    # files and the same pixels as arrays go through the same conversion
    y = D.load_folder(tmp_path, channels=1, image_size=8)
    torch.testing.assert_close(y[4:5], D.to_images(rgb[None], channels=1, image_size=8))
    # JPEG (lossy): close to the source
    smooth = np.stack([*np.meshgrid(np.arange(10) * 20, np.arange(12) * 15), np.full((12, 10), 90)], -1).astype(np.uint8)
    _write(tmp_path / "f.jpg", smooth, quality=95)
    z = D.load_images([tmp_path / "f.jpg"])
    assert z.shape == (1, 3, 12, 10)
    assert np.abs(z[0].permute(1, 2, 0).numpy() - smooth / 255).mean() < 0.02


def test_bad_and_inconsistent_files(tmp_path):
    rng = np.random.default_rng(2)
    _write(tmp_path / "a.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _write(tmp_path / "c.png", rng.integers(0, 256, (9, 8), dtype=np.uint8))
    _write(tmp_path / "d.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    with pytest.raises(D.ImageFileError, match="b.png"):
        D.load_folder(tmp_path)
    with pytest.warns(UserWarning) as rec:
        x = D.load_folder(tmp_path, on_error="skip")
    msgs = " ".join(str(r.message) for r in rec)
    assert "b.png" in msgs and "c.png" in msgs and "d.png" in msgs and "a.png" not in msgs
    assert x.shape == (1, 1, 8, 8)
    # with a size and channel count given, only the unreadable file is dropped
    with pytest.warns(UserWarning, match="b.png"):
        assert D.load_folder(tmp_path, image_size=8, channels=3, on_error="skip").shape == (3, 3, 8, 8)
    os.remove(tmp_path / "b.png")
    with pytest.raises(D.ImageFileError, match="c.png.*image_size"):
        D.load_folder(tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        D.load_folder(tmp_path, on_error="ignore")
    with pytest.raises(FileNotFoundError, match="nope"):
        D.load_folder(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        D.load_folder(empty)


def test_labelled_folder_and_as_images(tmp_path):
    rng = np.random.default_rng(3)
    for sub, n in (("good", 4), ("scratch", 2), ("stain", 3)):
        (tmp_path / sub).mkdir()
        for i in range(n):
            _write(tmp_path / sub / f"{i}.png", rng.integers(0, 256, (6, 6), dtype=np.uint8))
    normal, anom, labels, names = D.load_labelled_folder(tmp_path, image_size=16)
    assert normal.shape == (4, 1, 16, 16) and anom.shape == (5, 1, 16, 16)
    assert names == ["scratch", "stain"] and labels.tolist() == [0, 0, 1, 1, 1]
    assert D.as_images(str(tmp_path / "good")).shape == (4, 1, 6, 6)
    pil = Image.open(tmp_path / "good" / "0.png")
    assert torch.equal(D.as_images([pil]), D.as_images(str(tmp_path / "good" / "0.png")))
    with pytest.raises(TypeError, match="int"):
        D.as_images(5)


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
