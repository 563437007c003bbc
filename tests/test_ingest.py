"""anomgan.data.ingest: one policy for images in, at training (as_images & co.) and detection
(to_batch) time. Every accepted input becomes the same float32 (N, C, H, W) tensor in [0, 1];
every bad input gets a clear error naming it."""
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from anomgan import data as D
from anomgan.data import LUMA, to_batch

B, H, W = 2, 5, 7


@pytest.fixture(scope="module")
def u8():
    return np.random.default_rng(0).integers(0, 256, (B, 3, H, W), dtype=np.uint8)


def _want(u8):
    return torch.from_numpy(u8.astype(np.float64) / 255).float()


def _hwc(a):
    return np.ascontiguousarray(np.moveaxis(a, 0, -1))


def _rgb_inputs(u8, tmp_path):
    paths = []
    for i in range(B):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(_hwc(u8[i])).save(p)
        paths.append(p)
    return {
        "numpy uint8": u8,
        "torch uint8": torch.from_numpy(u8),
        "numpy uint16": u8.astype(np.uint16) * 257,
        "torch uint16": torch.from_numpy((u8.astype(np.int32) * 257)).to(torch.uint16),
        "torch float32": torch.from_numpy(u8).float() / 255,
        "numpy float64": u8 / 255.0,
        "torch float64 non-contiguous": (torch.from_numpy(u8).double() / 255)
        .permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2),
        "numpy big-endian float32": (u8 / 255.0).astype(">f4"),
        "list of PIL": [Image.fromarray(_hwc(u8[i])) for i in range(B)],
        "tuple of PIL": tuple(Image.fromarray(_hwc(u8[i])) for i in range(B)),
        "list of str paths": [str(p) for p in paths],
        "list of Path": paths,
        "list of arrays": [u8[i] for i in range(B)],
        "mixed list": [torch.from_numpy(u8[0]).float() / 255, paths[1]],
        # H * W = 35 colours fit an adaptive palette: lossless
        "palette PIL": [Image.fromarray(_hwc(u8[i])).convert("P", palette=Image.Palette.ADAPTIVE,
                                                            colors=256) for i in range(B)],
    }


def test_every_rgb_input_gives_the_same_tensor(u8, tmp_path):
    want = _want(u8)
    for name, batch in _rgb_inputs(u8, tmp_path).items():
        got = to_batch(batch)
        assert got.dtype == torch.float32 and got.shape == (B, 3, H, W), name
        assert torch.equal(got, want), name
        assert torch.equal(to_batch(batch, channels=3), want), name


def test_single_image_ranks(u8):
    want = _want(u8)
    assert torch.equal(to_batch(u8[0]), want[:1])                       # (C, H, W)
    assert torch.equal(to_batch(torch.from_numpy(u8[0])), want[:1])
    g = u8[0, 0]
    assert torch.equal(to_batch(g), want[:1, :1])                       # (H, W)
    assert torch.equal(to_batch([Image.fromarray(g)]), want[:1, :1])    # PIL "L"
    assert torch.equal(to_batch([g, torch.from_numpy(g)]), torch.cat([want[:1, :1]] * 2))


def test_grayscale_16_bit_and_float_files(tmp_path):
    a = np.random.default_rng(1).integers(0, 65536, (H, W), dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    want = torch.from_numpy(a.astype(np.float64) / 65535).float()[None, None]
    assert torch.equal(to_batch([p]), want)
    assert torch.equal(to_batch(a), want)
    f = np.random.default_rng(2).random((H, W)).astype(np.float32)
    assert torch.equal(to_batch([Image.fromarray(f, mode="F")]), torch.from_numpy(f)[None, None])
    i32 = Image.fromarray(a.astype(np.int32))  # mode "I"
    assert i32.mode == "I" and torch.equal(to_batch([i32]), want)
    b = Image.fromarray(a > 30000)  # mode "1"
    assert torch.equal(to_batch([b]), torch.from_numpy(a > 30000).float()[None, None])


def test_float32_input_is_not_copied_needlessly():
    x = torch.rand(2, 1, 6, 6)
    assert to_batch(x).data_ptr() == x.data_ptr()
    assert D.as_images(x).data_ptr() != x.data_ptr()  # training always returns its own copy


def test_channel_rule(u8):
    want = _want(u8)
    with pytest.warns(UserWarning, match="grayscale"):
        g = to_batch(u8, channels=1)
    lum = (want * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(g, lum, rtol=0, atol=1e-6)
    assert g.shape == (B, 1, H, W)
    with pytest.warns(UserWarning, match="replicating"):
        c = to_batch(u8[:, :1], channels=3)
    assert c.shape == (B, 3, H, W) and torch.equal(c, want[:, :1].expand(-1, 3, -1, -1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matching channels: no warning
        to_batch(u8, channels=3)
        to_batch(u8[:, :1], channels=1)
    # a list mixing gray and RGB, converted to the model's channels, warns once
    with pytest.warns(UserWarning, match="replicating") as rec:
        m = to_batch([u8[0, :1], u8[1], u8[0, :1]], channels=3)
    assert len(rec) == 1 and torch.equal(m[1], want[1]) and torch.equal(m[2], want[0, :1]
                                                                        .expand(3, -1, -1))
    # PIL RGB for a gray model, as Pillow's own luminance up to uint8 rounding
    pil = Image.fromarray(_hwc(u8[0]))
    with pytest.warns(UserWarning):
        g = to_batch([pil], channels=1)
    ref = torch.from_numpy(np.array(pil.convert("L"))).float()[None, None] / 255
    assert (g - ref).abs().max() <= 1 / 255 + 1e-6


def test_rejected_channel_counts_and_bad_channels(u8):
    with pytest.raises(ValueError, match=r"1, 3 or 4 channels.*grey \+ alpha"):
        to_batch(np.zeros((1, 2, 5, 6), np.uint8))
    with pytest.raises(ValueError, match=r"batch: images must have 1, 3 or 4 channels.*\(5, 6, 7\)"):
        to_batch(np.zeros((5, 6, 7), np.uint8))
    with pytest.raises(ValueError, match=r"batch\[0\].*1, 3 or 4 channels"):
        to_batch([np.zeros((2, 5, 5))])
    with pytest.raises(ValueError, match=r"batch\[1\]: has 3 channel\(s\) but batch\[0\] has 1"):
        to_batch([u8[0, :1], u8[1]])
    with pytest.raises(ValueError, match="to_batch: channels must be one of 1, 3"):
        to_batch(u8, channels=2)
    for bad in ("3", 3.0, True):
        with pytest.raises(TypeError, match="to_batch: channels must be None or an int"):
            to_batch(u8, channels=bad)


def test_errors_name_the_item(u8, tmp_path):
    f = torch.from_numpy(u8).float() / 255
    with pytest.raises(ValueError, match="empty list"):
        to_batch([])
    with pytest.raises(ValueError, match="empty"):
        to_batch(np.zeros((0, 3, 4, 4), np.uint8))
    bad = f.clone()
    bad[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"batch\[1\]: contains NaN values \(1 of"):
        to_batch(bad)
    with pytest.raises(ValueError, match=r"batch\[1\]: contains NaN"):
        to_batch([f[0], bad[1]])
    bad = f.clone()
    bad[1, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"batch\[1\]: float values must lie in \[0, 1\], "
                                         r"got min .* and max 1.5"):
        to_batch(bad.numpy())
    with pytest.raises(ValueError, match=r"batch: float values must lie in \[0, 1\]"):
        to_batch(f[0] * 255)
    with pytest.raises(ValueError, match="got shape \\(5,\\)"):
        to_batch(np.zeros(5))
    with pytest.raises(ValueError, match="got shape"):
        to_batch(np.zeros((1, 1, 1, 4, 4)))
    assert torch.equal(to_batch([f]), f)  # a rank-4 list item is a batch: concatenated
    p = tmp_path / "big.png"
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(p)
    with pytest.raises(ValueError, match=r"batch\[2\] \('.*big\.png'\): size 7x6 \(W x H\) "
                                         r"differs from batch\[0\]'s 7x5"):
        to_batch([u8[0, :1], u8[1, :1], p])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"batch\[1\] \('.*junk\.png'\): cannot read"):
        to_batch([u8[0], str(junk)])
    with pytest.raises(ValueError, match=r"batch\[0\] \('.*missing\.png'\): no such file"):
        to_batch([tmp_path / "missing.png"])
    truncated = tmp_path / "trunc.png"
    Image.fromarray(_hwc(u8[0])).save(tmp_path / "ok.png")
    truncated.write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    with pytest.raises(ValueError, match=r"batch\[0\] \('.*trunc\.png'\): cannot read"):
        to_batch([truncated])
    for dt in (np.int64, np.int8, np.int32, np.complex64):
        with pytest.raises(TypeError, match="unsupported dtype"):
            to_batch(np.zeros((1, 1, 4, 4), dt))
    with pytest.raises(TypeError, match="unsupported dtype"):
        to_batch(torch.zeros(1, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="wrapped in a list"):
        to_batch(Image.fromarray(u8[0, 0]))
    with pytest.raises(TypeError, match="wrapped in a list"):
        to_batch(str(junk))
    with pytest.raises(TypeError, match=r"batch\[1\]: expected a PIL image"):
        to_batch([u8[0], 3.0])
    with pytest.raises(TypeError, match="batch: expected a numpy array, a torch tensor"):
        to_batch({"a": 1})
    with pytest.raises(ValueError, match=r"integer values must lie in \[0, 65535\]"):
        to_batch([Image.fromarray(np.full((4, 4), 70000, np.int32))])


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
    b = rng.integers(0, 65536, (2, 1, 4, 5)).astype(np.uint16)
    np.testing.assert_allclose(D.to_images(b).numpy(), b.astype(np.float64) / 65535, rtol=1e-6)
    assert D.to_images(np.ones((1, 3, 3), bool)).min() == 1.0
    f = rng.random((2, 1, 4, 5))
    np.testing.assert_allclose(D.to_images(f).numpy(), f.astype(np.float32))


def test_to_images_never_aliases_input():
    x = torch.rand(2, 1, 5, 5)
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


# ---------------------------------------------------------------------------------- one policy
def _both(source, **kw):
    """``source`` read by the training front end and by the detection one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # to_batch's grey <-> RGB conversion warnings
        return D.as_images(source, **kw), to_batch(source, **kw)


def test_rgba_png_gives_the_same_tensor_at_training_and_detection(tmp_path):
    rgba = np.random.default_rng(6).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(p)
    assert Image.open(p).mode == "RGBA"
    rgb = torch.from_numpy(rgba[..., :3]).permute(2, 0, 1)[None].float() / 255  # alpha dropped
    luma = (rgb * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    for channels, want in ((None, rgb), (3, rgb), (1, luma)):
        for source in ([p], [str(p)], [Image.open(p)], rgba[None], torch.from_numpy(rgba[None])):
            train, detect = _both(source, channels=channels)
            assert torch.equal(train, detect), (channels, type(source))
            torch.testing.assert_close(train, want, rtol=0, atol=1e-6)


def test_bool_images_give_the_same_tensor_at_training_and_detection(tmp_path):
    m = np.random.default_rng(7).random((3, 1, 6, 7)) > 0.5
    want = torch.from_numpy(m).float()
    for source in (m, torch.from_numpy(m), list(m)):
        for channels in (None, 1, 3):
            train, detect = _both(source, channels=channels)
            assert torch.equal(train, detect) and torch.equal(train, want.expand(-1, channels or 1, -1, -1))
    p = tmp_path / "mask.png"
    Image.fromarray(m[0, 0]).save(p)  # PIL mode "1"
    train, detect = _both([p])
    assert torch.equal(train, detect) and torch.equal(train, want[:1])


def test_la_png_is_grey_in_both(tmp_path):
    la = np.random.default_rng(8).integers(0, 256, (6, 7, 2), dtype=np.uint8)
    p = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(p)
    train, detect = _both([p])
    assert torch.equal(train, detect)
    assert torch.equal(train, torch.from_numpy(la[..., 0])[None, None].float() / 255)


def test_hwc_rule_is_the_same_in_both():
    u8 = np.random.default_rng(9).integers(0, 256, (2, 3, 6, 7), dtype=np.uint8)
    hwc = np.ascontiguousarray(np.moveaxis(u8, 1, -1))
    want = torch.from_numpy(u8).float() / 255
    for source in (u8, hwc, torch.from_numpy(hwc), list(hwc), list(u8)):
        train, detect = _both(source)
        assert torch.equal(train, want) and torch.equal(detect, want)
    assert torch.equal(to_batch(hwc[0]), want[:1])  # one (H, W, C) image
    ambiguous = np.zeros((2, 3, 6, 4), np.uint8)
    for front, name in ((D.as_images, "images"), (to_batch, "batch")):
        with pytest.raises(ValueError, match=rf"{name}: shape \(2, 3, 6, 4\) is ambiguous.*layout='CHW'"):
            front(ambiguous)
        assert front(ambiguous, layout="CHW").shape == (2, 3, 6, 4)
        assert front(ambiguous, layout="HWC").shape == (2, 3, 3, 6)  # RGBA: alpha dropped
        with pytest.raises(ValueError, match=r"on the last axis \(layout 'HWC'\)"):
            front(u8, layout="HWC")
        with pytest.raises(ValueError, match=r"grey \+ alpha"):
            front(np.zeros((2, 2, 6, 7), np.uint8))
        with pytest.raises(ValueError, match="layout must be one of"):
            front(u8, layout="NCHW")


def test_tiny_pil_images_keep_their_layout():
    rgb = np.random.default_rng(10).integers(0, 256, (4, 3, 3), dtype=np.uint8)  # H=4, W=3
    train, detect = _both([Image.fromarray(rgb)])
    assert torch.equal(train, detect)
    assert torch.equal(train, torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)


def test_check_channels_is_the_package_rule():
    assert D.check_channels("Model", 3) == 3 and D.check_channels("Model", np.int64(1)) == 1
    assert D.check_channels("Model", None, allow_none=True) is None
    for bad in ("3", 3.0, True, None):
        with pytest.raises(TypeError, match="Model: channels must be an int"):
            D.check_channels("Model", bad)
    for bad in (0, 2, 4):
        with pytest.raises(ValueError, match=f"Model: channels must be one of 1, 3, got {bad}"):
            D.check_channels("Model", bad)


def test_single_sources_and_skipping(tmp_path):
    g = np.random.default_rng(11).integers(0, 256, (6, 7), dtype=np.uint8)
    p = tmp_path / "g.png"
    Image.fromarray(g).save(p)
    assert torch.equal(D.as_images(p), to_batch([p]))
    with pytest.raises(TypeError, match="wrapped in a list"):
        to_batch(p)
    with pytest.warns(UserWarning, match=r"skipping normal\[1\]: contains NaN"):
        x = D.as_images([g, np.full((6, 7), np.nan)], on_error="skip", name="normal")
    assert torch.equal(x, to_batch([g]))
    with pytest.raises(TypeError, match=r"normal\[1\]: expected a PIL image"):
        D.as_images([g, 3], on_error="skip", name="normal")
    with pytest.raises(ValueError, match="as_images: image_size must be an int >= 1"):
        D.as_images(g, image_size=0)
    with pytest.raises(TypeError, match=r"as_images: image_size\[1\] must be an int"):
        D.as_images(g, image_size=(8, 8.0))
