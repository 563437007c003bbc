"""The Detector file, detect() on every input type, tiling, thresholds."""
import os

import numpy as np
import pytest
import torch

import anomgan
from anomgan.detector import Detector, ScoringConfig
from anomgan.fileio import BundleError, load_bundle, save_bundle
from anomgan.models import get_method

from models_helpers import TINY, one_thread  # noqa: F401  (fixture)

NAMES = sorted(TINY)
FAST = ScoringConfig(search_steps=4, batch_size=8)


def tiny_detector(name, size=16, scoring=FAST, seed=0):
    torch.manual_seed(seed)
    return Detector(get_method(name)(size, 1, **TINY[name]), scoring=scoring)


def images(n=5, size=16, seed=1):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_gives_identical_results(name, tmp_path):
    det = tiny_detector(name)
    det.calibrate(images(6, seed=3), fpr=0.2)
    x = images()
    before = det.detect(x)
    path = tmp_path / "d.anomgan"
    det.save(path)
    back = anomgan.load(path)
    after = back.detect(x)
    assert back.method_name == name and back.threshold == det.threshold
    assert back.scoring == det.scoring
    torch.testing.assert_close(after.scores, before.scores, rtol=0, atol=0)
    torch.testing.assert_close(after.maps, before.maps, rtol=0, atol=0)
    assert torch.equal(after.labels, before.labels)


def test_a_dual_disc_file_from_before_g_norm_loads_with_batchnorm(tmp_path):
    """Detector files written before dual-disc had g_norm hold a BatchNorm generator and no
    g_norm key: they load as g_norm="batch" and score exactly as before."""
    torch.manual_seed(0)
    det = Detector(get_method("dual-disc")(16, 1, **TINY["dual-disc"], g_norm="batch"))
    x = images()
    before = det.detect(x)
    det.save(tmp_path / "new.anomgan")
    tensors, meta, _ = load_bundle(tmp_path / "new.anomgan", kind="detector", max_format_version=1)
    old = dict(meta, hparams={k: v for k, v in meta["hparams"].items() if k != "g_norm"})
    save_bundle(tmp_path / "old.anomgan", tensors, old, kind="detector", format_version=1)
    back = anomgan.load(tmp_path / "old.anomgan")
    assert back.method.hp["g_norm"] == "batch"
    after = back.detect(x)
    torch.testing.assert_close(after.scores, before.scores, rtol=0, atol=0)


def test_an_old_detector_file_keeps_its_500_search_steps(tmp_path, monkeypatch):
    """The default step count of the latent search changed (DEFAULT_SEARCH_STEPS); a detector
    file written with search_steps=500 still searches 500 steps, in float32 when it predates
    search_precision, and a file without search_steps at all reads as 500 (what it scored with)."""
    import anomgan.scoring.latent as latent_mod
    from anomgan.scoring.config import DEFAULT_SEARCH_STEPS

    assert ScoringConfig().search_steps == DEFAULT_SEARCH_STEPS != 500
    det = tiny_detector("noisy-gan", scoring=ScoringConfig(search_steps=500, batch_size=8))
    det.method.encoder_trained.fill_(True)
    det.save(tmp_path / "new.anomgan")
    tensors, meta, _ = load_bundle(tmp_path / "new.anomgan", kind="detector", max_format_version=1)
    for name, drop in (("old.anomgan", {"search_precision"}),
                       ("older.anomgan", {"search_precision", "search_steps"})):
        old = dict(meta, scoring={k: v for k, v in meta["scoring"].items() if k not in drop})
        save_bundle(tmp_path / name, tensors, old, kind="detector", format_version=1)
    seen = []
    real = latent_mod.latent_search

    def spy(*args, **kwargs):
        seen.append((kwargs["steps"], kwargs["compute_dtype"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(latent_mod, "latent_search", spy)
    x = images(2)
    for name in ("old.anomgan", "older.anomgan"):
        back = anomgan.load(tmp_path / name)
        assert (back.scoring.search_steps, back.scoring.search_precision) == (500, "float32")
        seen.clear()
        back.detect(x)
        assert seen == [(500, None)]
    seen.clear()
    new = anomgan.load(tmp_path / "new.anomgan")           # written today: stored as it was
    assert new.scoring == det.scoring and new.scoring.search_precision == "auto"
    new.detect(x)
    assert [s for s, _ in seen] == [500]


def test_zero_search_steps_scores_the_encoders_start_and_needs_the_encoder():
    """search_steps=0: the AnoGAN loss at E(x), no Adam step; without a trained encoder there
    is nothing to start from (ValueError, not a score of a fixed random latent)."""
    torch.manual_seed(0)
    m = get_method("noisy-gan")(16, 1, **TINY["noisy-gan"])
    det = Detector(m, scoring=ScoringConfig(search_steps=0, batch_size=8))
    x = images(3)
    with pytest.raises(ValueError, match="encoder stage has not been trained"):
        det.detect(x)
    m.encoder_trained.fill_(True)
    scores, maps = det.score_tensor(x)
    with torch.no_grad():
        xm = x * 2 - 1
        z = m.encoder(xm).flatten(1)
        rec = m.generator(z)
        ref = (0.9 * (xm - rec).abs().flatten(1).mean(1)
               + 0.1 * (m.discriminator.features(xm) - m.discriminator.features(rec)).abs()
               .flatten(1).mean(1))
    torch.testing.assert_close(scores, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps, ((x - (rec + 1) / 2).abs().mean(1)), rtol=1e-4, atol=1e-5)


def test_bad_files_are_refused(tmp_path):
    det = tiny_detector("dual-disc")
    good = tmp_path / "good.anomgan"
    det.save(good)
    data = good.read_bytes()
    (tmp_path / "trunc").write_bytes(data[: len(data) - 100])
    with pytest.raises(BundleError, match="truncated or corrupted"):
        anomgan.load(tmp_path / "trunc")
    (tmp_path / "pickle").write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.")
    with pytest.raises(BundleError):
        anomgan.load(tmp_path / "pickle")
    tensors, meta, _ = load_bundle(good, kind="detector", max_format_version=1)
    save_bundle(tmp_path / "newer", tensors, meta, kind="detector", format_version=99)
    with pytest.raises(BundleError, match="newer"):
        anomgan.load(tmp_path / "newer")
    save_bundle(tmp_path / "ckpt", tensors, meta, kind="checkpoint", format_version=1)
    with pytest.raises(BundleError, match="expected a 'detector'"):
        anomgan.load(tmp_path / "ckpt")
    edited = dict(meta, hparams=dict(meta["hparams"], width=8))
    save_bundle(tmp_path / "edited", tensors, edited, kind="detector", format_version=1)
    with pytest.raises(BundleError, match="do not fit together"):
        anomgan.load(tmp_path / "edited")
    save_bundle(tmp_path / "unknown", tensors, dict(meta, method="nope"), kind="detector", format_version=1)
    with pytest.raises(BundleError, match="nope"):
        anomgan.load(tmp_path / "unknown")
    with pytest.raises(BundleError, match="no such file"):
        anomgan.load(tmp_path / "missing.anomgan")


def test_every_input_type_gives_the_same_scores(tmp_path):
    from PIL import Image

    det = tiny_detector("ganomaly")
    u8 = (images(3) * 255).round().to(torch.uint8)
    ref = det.detect(u8.float() / 255).scores
    paths = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(u8[i, 0].numpy()).save(p)
        paths.append(str(p))
    variants = {
        "numpy uint8": u8.numpy(),
        "torch uint8": u8,
        "uint16": (u8.numpy().astype(np.uint16) * 257),
        "PIL": [Image.fromarray(u8[i, 0].numpy()) for i in range(3)],
        "paths": paths,
    }
    for what, batch in variants.items():
        got = det.detect(batch)
        torch.testing.assert_close(got.scores, ref, msg=what)
    res = det.detect(paths)
    assert res.names == paths
    single = det.detect(u8[1].numpy())  # (C, H, W): one image
    torch.testing.assert_close(single.scores, ref[1:2])


@pytest.mark.parametrize("name", NAMES)
def test_score_does_not_depend_on_the_batch(name):
    det = tiny_detector(name)
    x = images(6)
    together = det.detect(x)
    for i in (0, 3, 5):
        alone = det.detect(x[i:i + 1])
        torch.testing.assert_close(alone.scores, together.scores[i:i + 1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(alone.maps, together.maps[i:i + 1], rtol=1e-5, atol=1e-6)
    shuffled = det.detect(x.flip(0))
    torch.testing.assert_close(shuffled.scores.flip(0), together.scores, rtol=1e-5, atol=1e-6)


def test_search_methods_score_by_latent_search_loss():
    det = tiny_detector("anogan", scoring=ScoringConfig(search_steps=30, batch_size=8))
    x = images(4)
    few = tiny_detector("anogan", scoring=ScoringConfig(search_steps=2, batch_size=8)).detect(x)
    many = det.detect(x)
    assert (many.scores <= few.scores + 1e-6).all()  # a longer search only lowers the loss


def test_tiling_an_image_of_tile_size_equals_untiled_scoring():
    from anomgan.scoring.tiling import tiled_apply

    det = tiny_detector("dual-disc", scoring=ScoringConfig(image_score="patch_topn", patch=8, stride=4))
    x = images(2)
    direct = det.detect(x)
    _, maps = tiled_apply(det.score_model_size, x, 16, overlap=4)
    torch.testing.assert_close(maps, direct.maps, rtol=0, atol=0)
    torch.testing.assert_close(det._map_scores(maps, None), direct.scores, rtol=0, atol=0)


def test_planted_defect_in_a_megapixel_image_lights_up_its_place():
    torch.manual_seed(0)
    det = tiny_detector("dual-disc", size=32, scoring=ScoringConfig(image_score="patch_topn",
                                                                    tile_overlap=8, batch_size=256))
    gen = torch.Generator().manual_seed(5)
    big = 0.5 + 0.05 * torch.randn(1, 1, 1024, 1024, generator=gen)
    big = torch.nn.functional.avg_pool2d(big, 5, 1, 2).clamp(0, 1)
    clean = big.clone()
    big[0, 0, 700:712, 200:260] = 1.0  # a bright scratch, 0.07% of the pixels
    res = det.detect(torch.cat([clean, big]))
    assert res.maps.shape == (2, 1024, 1024)
    m = res.maps[1]
    ys, xs = np.unravel_index(int(m.argmax()), m.shape)
    assert 690 <= ys <= 722 and 190 <= xs <= 270
    assert res.scores[1] > res.scores[0]


def test_thresholds_from_both_calibrations():
    det = tiny_detector("dual-disc")
    normal = images(20, seed=7)
    thr = det.calibrate(normal, fpr=0.1)
    flagged = int(det.detect(normal).labels.sum())
    assert thr.rule == "fpr" and flagged <= 2  # at most 10% of the 20 normal images
    det.calibrate(normal, quantile=0.5)
    assert det.threshold.rule == "quantile"
    odd = images(6, seed=8) * 0 + 1.0  # saturated images: far from anything learnt
    x = torch.cat([normal[:6], odd])
    labels = np.r_[np.zeros(6), np.ones(6)]
    thr = det.calibrate(images=x, labels=labels)
    assert thr.rule == "f1"
    with pytest.raises(ValueError, match="exactly one of"):
        det.calibrate(normal)


def test_detect_from_a_path_is_loaded_once(tmp_path):
    from anomgan import api

    det = tiny_detector("ganomaly")
    path = tmp_path / "d.anomgan"
    det.save(path)
    x = images(2)
    a = anomgan.detect(x, path)
    b = anomgan.detect(x, str(path))
    torch.testing.assert_close(a.scores, det.detect(x).scores)
    torch.testing.assert_close(a.scores, b.scores)
    assert sum(1 for k in api._CACHE if k[0] == os.path.abspath(path)) == 1


def test_bad_batches_give_clear_errors(tmp_path):
    det = tiny_detector("ganomaly")
    with pytest.raises(ValueError, match="empty"):
        det.detect(torch.zeros(0, 1, 16, 16))
    bad = images(2)
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"batch\[1\]"):
        det.detect(bad)
    with pytest.raises(ValueError, match="smaller than the detector's input size"):
        det.detect(images(1, size=8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises((ValueError, OSError), match="broken.png"):
        det.detect([str(tmp_path / "broken.png")])
    with pytest.raises(TypeError, match="Detector or a path"):
        anomgan.detect(images(1), 42)


def test_train_returns_a_calibrated_detector(tmp_path):
    x = images(24, seed=11)
    det = anomgan.train(x, None, method="ganomaly", steps=3, batch_size=8, progress=False,
                        hparams=TINY["ganomaly"], validation_fraction=0.25, target_fpr=0.25)
    assert isinstance(det, Detector) and det.threshold is not None
    assert det.info["validation_images"] == 6 and det.info["normal_images"] == 18
    res = det.detect(x[:4])
    assert res.scores.shape == (4,) and res.labels.dtype == torch.bool
