"""Every accepted input of detect() becomes the same float32 (B, C, H, W) tensor; every bad
input gets a clear error naming the item."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from anomgan.preprocess import LUMA, to_batch

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
    x = torch.rand(2, 1, 4, 4)
    assert to_batch(x).data_ptr() == x.data_ptr()


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


def test_rejected_channel_counts(u8):
    for c in (2, 4):
        with pytest.raises(ValueError, match="1 or 3 channels"):
            to_batch(np.zeros((1, c, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"looks like \(H, W, C\)"):
        to_batch(_hwc(u8[0]))
    with pytest.raises(ValueError, match=r"batch\[0\].*1 or 3 channels"):
        to_batch([np.zeros((4, 5, 5))])
    with pytest.raises(ValueError, match=r"unsupported PIL image mode 'RGBA'"):
        to_batch([Image.new("RGBA", (4, 4))])
    with pytest.raises(ValueError, match=r"batch\[1\]: has 3 channel\(s\) but batch\[0\] has 1"):
        to_batch([u8[0, :1], u8[1]])
    with pytest.raises(ValueError, match="channels must be 1, 3 or None"):
        to_batch(u8, channels=2)


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
    with pytest.raises(ValueError, match=r"batch\[0\]: a list item must be one image"):
        to_batch([f])
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
    for dt in (np.bool_, np.int64, np.int8, np.complex64):
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
    with pytest.raises(TypeError, match="expected a tensor"):
        to_batch({"a": 1})
    with pytest.raises(ValueError, match=r"integer values must lie in \[0, 65535\]"):
        to_batch([Image.fromarray(np.full((4, 4), 70000, np.int32))])
