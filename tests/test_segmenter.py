"""The defect segmenter (anomgan.scoring.segmenter): synthetic anomalies, the U-Net, learning a
defect it never saw, and its place in the detector (maps, image score, file, export, errors)."""
import numpy as np
import pytest
import torch

import anomgan
from anomgan.detector import Detector, ScoringConfig
from anomgan.models import get_method
from anomgan.scoring import metrics
from anomgan.scoring.segmenter import (SegNet, Segmenter, SegmenterConfig, net_input,
                                       synthetic_anomalies)

from models_helpers import TINY, one_thread  # noqa: F401  (fixture)

PATCH = dict(image_score="patch_topn", patch=1, stride=1, n=5)


def texture(n, size, seed):
    """Smooth random textures in [0.3, 0.7] (the 'normal parts')."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(n, 1, size + 2, size + 2, generator=g), 3, 1)
    return 0.3 + 0.4 * (x - x.amin()) / (x.amax() - x.amin())


def plant_square(x, seed):
    """A bright 5x5 square at a random place in each image (a defect kind the segmenter's
    generator never makes: its blobs are smooth-field level sets), and the masks."""
    g = torch.Generator().manual_seed(seed)
    x, m = x.clone(), torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.bool)
    for i in range(x.shape[0]):
        y, z = torch.randint(2, x.shape[-2] - 7, (2,), generator=g).tolist()
        x[i, :, y:y + 5, z:z + 5] += 0.3
        m[i, y:y + 5, z:z + 5] = True
    return x.clamp(0, 1), m


def test_synthetic_anomalies_change_only_the_masked_pixels_and_are_seeded():
    x, pool = texture(64, 24, 0), texture(16, 24, 1)
    a, m = synthetic_anomalies(x, pool, torch.Generator().manual_seed(3))
    b, m2 = synthetic_anomalies(x, pool, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(m, m2)
    assert m.shape == (64, 24, 24) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a[:, 0][m == 0], x[:, 0][m == 0])  # outside the mask: untouched
    with_anomaly = (m.flatten(1).sum(1) > 0).float().mean().item()
    assert 0.25 < with_anomaly < 0.75  # about half of the batch
    changed = (a[:, 0] != x[:, 0]) & (m > 0)
    assert changed.sum() > 0.5 * (m > 0).sum()  # inside: changed (b >= 0.2)


@pytest.mark.parametrize("size,c_in", [(8, 1), (17, 2), (33, 4)])
def test_segnet_maps_any_size_to_one_logit_per_pixel(size, c_in):
    net = SegNet(c_in, width=4).eval()
    out = net(torch.rand(3, c_in, size, size))
    assert out.shape == (3, size, size) and torch.isfinite(out).all()


def test_segmenter_learns_to_find_a_defect_kind_it_never_saw():
    """Trained on synthetic blobs in normal textures only, it localises planted squares."""
    normal = texture(64, 32, 0)
    g = torch.Generator().manual_seed(0)

    def crops(n):
        return normal[torch.randint(64, (n,), generator=g)]

    cfg = SegmenterConfig(steps=150, batch_size=16, width=8)
    seg = Segmenter.fit(crops, None, cfg, 1, seed=0)
    test, masks = plant_square(texture(24, 32, 5), 6)
    maps = seg.maps(test, None)
    assert maps.shape == (24, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    auroc = metrics.pixel_auroc(maps.numpy(), masks.numpy())
    assert auroc > 0.85, auroc
    untrained = Segmenter(cfg, SegNet(1, 8).eval(), 1).maps(test, None)
    assert metrics.pixel_auroc(untrained.numpy(), masks.numpy()) < auroc


def test_segmenter_fit_plants_what_a_given_anomalies_function_plants():
    """``anomalies=`` replaces the generator (a study's oracle); the default is the module's."""
    normal = texture(16, 16, 0)
    seen = []

    def squares(x, pool, gen):
        assert pool.shape == x.shape  # the loop hands it a pool of other crops
        xs, m = x.clone(), torch.zeros(x.shape[0], *x.shape[-2:])
        xs[::2, :, 4:9, 4:9], m[::2, 4:9, 4:9] = 1.0, 1.0
        seen.append(m)
        return xs, m

    cfg = SegmenterConfig(steps=3, batch_size=4, width=4)
    Segmenter.fit(lambda n: normal[:n], None, cfg, 1, seed=0, anomalies=squares)
    assert len(seen) == 3 and all(m[::2].sum() == 25 * 2 and m[1::2].sum() == 0 for m in seen)
    import inspect
    assert inspect.signature(Segmenter.fit).parameters["anomalies"].default is synthetic_anomalies


def test_segmenter_with_residual_reads_the_methods_maps():
    calls = []
    normal = texture(16, 16, 0)

    def residual(x):
        calls.append(x.shape)
        return (x[:, 0] - 0.5).abs()

    cfg = SegmenterConfig(steps=3, batch_size=4, width=4, inputs="image+residual")
    seg = Segmenter.fit(lambda n: normal[:n], residual, cfg, 1, seed=0)
    assert calls == [(4, 1, 16, 16)] * 3
    assert seg.net.e1[0].in_channels == 2
    r = torch.rand(2, 16, 16)
    a, b = seg.maps(normal[:2], r), seg.maps(normal[:2], r * 0)
    assert not torch.equal(a, b)  # the residual channel matters
    torch.testing.assert_close(seg.maps(normal[:2], r),
                               torch.sigmoid(seg.net(net_input(normal[:2], r))))
    with pytest.raises(ValueError, match="needs residual"):
        Segmenter.fit(lambda n: normal[:n], None, cfg, 1)
    with pytest.raises(ValueError, match="takes no residual"):
        Segmenter.fit(lambda n: normal[:n], residual, SegmenterConfig(steps=1), 1)


def _tiny_detector(**kw):
    torch.manual_seed(0)
    return Detector(get_method("dual-disc")(16, 1, **TINY["dual-disc"]),
                    scoring=ScoringConfig(batch_size=8, **PATCH), **kw)


@pytest.mark.parametrize("inputs", ["image", "image+residual"])
def test_detector_maps_are_the_segmenters_and_survive_save_and_load(tmp_path, inputs):
    det = _tiny_detector()
    det.fit_segmenter(texture(6, 40, 0), {"steps": 4, "batch_size": 4, "width": 4, "inputs": inputs})
    x = texture(3, 16, 1)
    res = det.detect(x)
    _, method_maps = det.method.score(x)
    torch.testing.assert_close(res.maps, det.segmenter.maps(x, method_maps))
    top5 = res.maps.flatten(1).topk(5, 1).values.mean(1)
    torch.testing.assert_close(res.scores, top5)  # the patch top-n of the segmenter's map
    big = texture(2, 40, 2)
    rb = det.detect(big)
    assert rb.maps.shape == (2, 40, 40) and rb.maps.min() >= 0 and rb.maps.max() <= 1
    det.save(tmp_path / "d.anomgan")
    back = anomgan.load(tmp_path / "d.anomgan")
    assert back.segmenter is not None and back.segmenter.config == det.segmenter.config
    torch.testing.assert_close(back.detect(big).maps, rb.maps, rtol=0, atol=0)
    assert back.describe()["segmenter.inputs"] == inputs


def test_fit_segmenter_checks_its_settings_and_inputs():
    det = _tiny_detector()
    with pytest.raises(ValueError, match="steps"):
        det.fit_segmenter(texture(4, 16, 0), {"steps": 0})
    with pytest.raises(ValueError, match="unknown|not a setting|settings"):
        det.fit_segmenter(texture(4, 16, 0), {"stpes": 3})
    with pytest.raises(ValueError, match="inputs"):
        det.fit_segmenter(texture(4, 16, 0), {"inputs": "residual"})
    with pytest.raises(TypeError, match="segmenter must be"):
        det.fit_segmenter(texture(4, 16, 0), 3)
    with pytest.raises(ValueError, match="smaller than the model size"):
        det.fit_segmenter(texture(4, 8, 0), {"steps": 1})
    native = Detector(det.method, scoring=ScoringConfig(image_score="native"))
    with pytest.raises(ValueError, match="patch_topn"):
        native.fit_segmenter(texture(4, 16, 0), {"steps": 1})
    pos = Detector(det.method, scoring=ScoringConfig(map_norm="position", **PATCH))
    with pytest.raises(ValueError, match="map_norm"):
        pos.fit_segmenter(texture(4, 16, 0), {"steps": 1})


def test_train_with_a_segmenter_calibrates_on_its_scores():
    x = texture(24, 16, 0)
    det = anomgan.train(x, method="ganomaly", steps=2, batch_size=4, validation=texture(8, 16, 3),
                        segmenter={"steps": 3, "batch_size": 4, "width": 4}, progress=False,
                        hparams=TINY["ganomaly"])
    assert det.segmenter is not None and det.scoring.image_score == "patch_topn"
    assert "segmenter_seconds" in det.info
    val = det.detect(texture(8, 16, 3)).scores
    assert (val > det.threshold.value).float().mean() <= 0.125 + 1e-9
    with pytest.raises(ValueError, match="patch_topn"):  # checked before training
        anomgan.train(x, method="ganomaly", steps=2, segmenter=True, progress=False,
                      scoring={"image_score": "native"}, hparams=TINY["ganomaly"])


def test_export_of_a_segmenter_detector_matches_detect(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    det = _tiny_detector()
    det.fit_segmenter(texture(6, 16, 0), {"steps": 3, "batch_size": 4, "width": 4})
    path = tmp_path / "m.onnx"
    det.export(path)
    x = (texture(5, 16, 4) * 255).round().to(torch.uint8)
    ref = det.detect(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores, maps = sess.run(["scores", "maps"], {"images": x.numpy()})
    np.testing.assert_allclose(maps, ref.maps.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(scores, ref.scores.numpy(), rtol=0, atol=1e-4)
