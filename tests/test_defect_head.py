"""The defect head (issue 13): head inputs against the formula, the ensemble learns a separable
problem, the fusion formula, the detector path (train, detect, save/load, resize mode), and the
errors."""
import math

import pytest
import torch
import torch.nn.functional as F

import anomgan
from anomgan.data.ingest import resize
from anomgan.detector import Detector
from anomgan.fileio import BundleError, load_bundle, save_bundle
from anomgan.scoring import metrics
from anomgan.scoring.defect_head import (DefectHead, DefectHeadConfig, HeadNet, defect_boxes, head_inputs,
                                         paste_defects)

from models_helpers import assert_file_keeps, make, no_training, one_thread  # noqa: F401  (fixtures)

TINY_HEAD = {"members": 2, "size": 16, "steps": 40, "width": 4, "batch_size": 8}


def test_head_inputs_match_the_formula_on_odd_sizes_and_non_contiguous_input():
    torch.manual_seed(0)
    images = torch.rand(3, 3, 37, 29).transpose(2, 3)                  # (3, 3, 29, 37), strided
    maps = torch.rand(3, 37, 29).transpose(1, 2) * 1.5 - 0.2           # outside [0, 1] on purpose
    u = head_inputs(images, maps, 16)
    x = images.double().mean(1, keepdim=True)
    r = maps.double().clamp(0, 1)[:, None]
    want = torch.cat([F.adaptive_avg_pool2d(x, 16) * 2 - 1, F.adaptive_avg_pool2d(r, 16) * 4], 1)
    assert u.shape == (3, 2, 16, 16) and u.dtype == torch.float32
    torch.testing.assert_close(u.double(), want, atol=1e-5, rtol=0)
    same = head_inputs(torch.ones(1, 1, 16, 16), torch.full((1, 16, 16), 0.25), 16)
    assert torch.equal(same, torch.cat([torch.ones(1, 1, 16, 16), torch.ones(1, 1, 16, 16)], 1))
    with pytest.raises(ValueError, match="head_inputs"):
        head_inputs(torch.rand(2, 1, 8, 8), torch.rand(3, 8, 8), 8)


@pytest.mark.parametrize("bad, err, match", [
    ({"members": 0}, ValueError, "members"),
    ({"size": 8}, ValueError, "size"),
    ({"steps": 1.5}, TypeError, "steps"),
    ({"batch_size": 1}, ValueError, "batch_size"),
    ({"lr": 0.0}, ValueError, "lr"),
    ({"widht": 8}, ValueError, "unknown setting"),
    ({"size": 32, "paste": 33}, ValueError, "paste"),
    ({"paste": -1}, ValueError, "paste"),
    ({"paste": 2.5}, TypeError, "paste"),
    ({"paste_fraction": 1.5}, ValueError, "paste_fraction"),
    ({"weight": -0.5}, ValueError, "weight"),
    ({"weight": float("inf")}, ValueError, "weight"),
    ({"weight": "2"}, TypeError, "weight"),
])
def test_config_names_the_bad_setting(bad, err, match):
    with pytest.raises(err, match=match):
        DefectHeadConfig.from_any(bad)


def test_config_from_any_forms():
    assert DefectHeadConfig.from_any(None) is None and DefectHeadConfig.from_any(False) is None
    assert DefectHeadConfig.from_any(True) == DefectHeadConfig()
    c = DefectHeadConfig(members=2)
    assert DefectHeadConfig.from_any(c) is c
    with pytest.raises(TypeError, match="defect_head"):
        DefectHeadConfig.from_any("yes")


def _toy_inputs(n, gen, defect):
    """Head inputs whose map channel holds a bright 4x4 blob somewhere when ``defect``."""
    u = torch.cat([torch.rand(n, 1, 16, 16, generator=gen) * 2 - 1,
                   torch.rand(n, 1, 16, 16, generator=gen) * 0.4], 1)
    if defect:
        for i in range(n):
            a, b = torch.randint(0, 12, (2,), generator=gen).tolist()
            u[i, 1, a:a + 4, b:b + 4] += 2.0
    return u


def test_the_ensemble_learns_a_separable_problem_and_generalises(one_thread):
    gen = torch.Generator().manual_seed(0)
    cfg = DefectHeadConfig(**{**TINY_HEAD, "steps": 150})
    head = DefectHead.fit(_toy_inputs(64, gen, False), _toy_inputs(16, gen, True), cfg, seed=0)
    assert len(head.nets) == 2 and all(not n.training for n in head.nets)
    ln, ld = head.logits(_toy_inputs(40, gen, False)), head.logits(_toy_inputs(40, gen, True))
    y = torch.cat([torch.zeros(40), torch.ones(40)]).numpy()
    assert metrics.roc_auc(y, torch.cat([ln, ld]).numpy()) > 0.95
    # the head's logit is the members' mean logit
    u = _toy_inputs(5, gen, True)
    with torch.no_grad():
        want = torch.stack([n(u) for n in head.nets]).mean(0)
    torch.testing.assert_close(head.logits(u, batch_size=2), want)


def test_fit_is_seeded_and_checks_its_inputs(one_thread):
    gen = torch.Generator().manual_seed(1)
    n, d = _toy_inputs(8, gen, False), _toy_inputs(4, gen, True)
    cfg = DefectHeadConfig(**{**TINY_HEAD, "steps": 3})
    a, b = DefectHead.fit(n, d, cfg, seed=3), DefectHead.fit(n, d, cfg, seed=3)
    assert torch.equal(a.logits(n), b.logits(n))
    with pytest.raises(ValueError, match="normal must be"):
        DefectHead.fit(n[:, :1], d, cfg)
    with pytest.raises(ValueError, match="no defects"):
        DefectHead.fit(n, d[:0], cfg)


def test_fusion_is_the_weighted_sum_of_two_standardised_scores():
    head = DefectHead(DefectHeadConfig(members=1, width=2, size=16), [HeadNet(2)])
    with pytest.raises(RuntimeError, match="fusion"):
        head.fuse(torch.zeros(2), torch.zeros(2))
    s = torch.tensor([1.0, 2.0, 4.0, 5.0])
    lg = torch.tensor([-3.0, 0.0, 1.0, 2.0])
    f = head.fit_fusion(s, lg)
    assert math.isclose(f["score_mean"], 3.0) and math.isclose(f["score_std"], float(s.double().std()))
    fused = head.fuse(torch.tensor([3.0, 7.0]), torch.tensor([0.0, 4.0]))
    want = torch.tensor([(3 - 3) / f["score_std"] + (0 - 0) / f["logit_std"],
                         (7 - 3) / f["score_std"] + (4 - 0) / f["logit_std"]])
    torch.testing.assert_close(fused, want.float())
    with pytest.raises(ValueError, match="not finite"):
        head.fit_fusion(torch.tensor([1.0, float("nan")]), torch.zeros(2))
    with pytest.raises(ValueError, match="N >= 2"):
        head.fit_fusion(torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="score_std"):
        DefectHead(head.config, head.nets, {**f, "score_std": 0.0})
    # weight w: score z + w * logit z; w = 0 is the detector's own (standardised) score
    for w in (0.0, 2.5):
        weighted = DefectHead(DefectHeadConfig(members=1, width=2, size=16, weight=w), head.nets, f)
        torch.testing.assert_close(weighted.fuse(torch.tensor([3.0, 7.0]), torch.tensor([0.0, 4.0])),
                                   torch.tensor([0.0, 4 / f["score_std"] + w * 4 / f["logit_std"]]))
        back = DefectHead.from_state(*weighted.state())  # the detector file keeps the weight
        assert back.config.weight == w and back.fusion == weighted.fusion


def test_defect_boxes_centre_on_the_map_peak_and_stay_inside():
    i, j = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    u = torch.zeros(2, 2, 32, 32)
    u[0, 1] = torch.exp(-((i - 11) ** 2 + (j - 21) ** 2) / 8)   # 9 x 9 mean peaks at (11, 21)
    u[1, 1] = torch.exp(-((i - 11) ** 2 + (j - 25) ** 2) / 8)   # near the right edge
    corners = defect_boxes(u, 8)
    assert corners.dtype == torch.int64 and corners.tolist() == [[7, 17], [7, 21]]
    assert defect_boxes(u, 20).tolist() == [[1, 11], [1, 12]]   # clipped to the image
    # against a float64 reference on random maps (odd size): argmax of the zero-padded 9 x 9 mean
    g = torch.Generator().manual_seed(0)
    r = torch.rand(4, 2, 21, 21, generator=g)
    side = 7
    padded = F.pad(r[:, 1].double(), (4, 4, 4, 4))
    for k, (a, b) in enumerate(defect_boxes(r, side).tolist()):
        means = torch.stack([torch.stack([padded[k, y:y + 9, x:x + 9].mean() for x in range(21)])
                             for y in range(21)])
        cy, cx = divmod(int(means.argmax()), 21)
        assert (a, b) == (min(max(cy - 3, 0), 14), min(max(cx - 3, 0), 14))


def test_paste_defects_is_the_source_box_at_the_host_brightness():
    gen = torch.Generator().manual_seed(0)
    hosts, sources = torch.rand(2, 2, 20, 20, generator=gen), torch.rand(2, 2, 20, 20, generator=gen) - 0.7
    hosts_before, sources_before = hosts.clone(), sources.clone()
    corners = torch.tensor([[3, 5], [14, 0]])
    out = paste_defects(hosts, sources, corners, 6)
    assert torch.equal(hosts, hosts_before) and torch.equal(sources, sources_before)
    for j, (a, b) in enumerate(corners.tolist()):
        box = (slice(a, a + 6), slice(b, b + 6))
        inside = torch.zeros(20, 20, dtype=torch.bool)
        inside[box] = True
        assert torch.equal(out[j][:, ~inside], hosts[j][:, ~inside])        # the rest is the host
        assert torch.equal(out[j, 1][box], sources[j, 1][box])               # map copied as is
        shift = hosts[j, 0].double().mean() - sources[j, 0].double().mean()  # image: host brightness
        torch.testing.assert_close(out[j, 0][box].double(), sources[j, 0][box].double() + shift,
                                   atol=1e-5, rtol=0)


def test_fit_with_pasted_defects_learns_and_differs_from_the_plain_fit(one_thread):
    gen = torch.Generator().manual_seed(2)
    n, d = _toy_inputs(64, gen, False), _toy_inputs(16, gen, True)
    plain = DefectHead.fit(n, d, DefectHeadConfig(**{**TINY_HEAD, "steps": 150}), seed=0)
    cfg = DefectHeadConfig(**{**TINY_HEAD, "steps": 150, "paste": 6, "paste_fraction": 0.5})
    pasted = DefectHead.fit(n, d, cfg, seed=0)
    tn, td = _toy_inputs(40, gen, False), _toy_inputs(40, gen, True)
    y = torch.cat([torch.zeros(40), torch.ones(40)]).numpy()
    assert metrics.roc_auc(y, torch.cat([pasted.logits(tn), pasted.logits(td)]).numpy()) > 0.95
    assert not torch.equal(plain.logits(tn), pasted.logits(tn))
    again = DefectHead.fit(n, d, cfg, seed=0)
    assert torch.equal(again.logits(tn), pasted.logits(tn))


def _parts(n, gen, defect=False, size=24):
    """Grey parts with a bright band; defects get a dark square (a crude crack)."""
    x = 0.5 + 0.05 * torch.rand(n, 1, size, size, generator=gen)
    x[:, :, :, 10:13] = 0.9
    if defect:
        for i in range(n):
            a, b = torch.randint(0, size - 6, (2,), generator=gen).tolist()
            x[i, :, a:a + 6, b:b + 6] = 0.1
    return x


@pytest.mark.parametrize("mode, paste", [("tile", 0), ("resize", 0), ("tile", 6)])
def test_train_with_a_head_detects_the_fused_score_and_the_file_keeps_it(tmp_path, mode, paste, one_thread):
    gen = torch.Generator().manual_seed(0)
    x, a, v = _parts(24, gen), _parts(8, gen, True), _parts(8, gen)
    head_cfg = {**TINY_HEAD, "paste": paste}
    det = anomgan.train(x, anomalous=a, validation=v, method="dual-disc", image_size=16,
                        input_mode=mode, steps=4, batch_size=4, progress=False, seed=0,
                        scoring={"image_score": "patch_topn", "patch": 8, "stride": 4, "n": 2},
                        defect_head=head_cfg)
    assert det.head is not None and det.head.config == DefectHeadConfig(**head_cfg)
    assert det.info["defect_head_seconds"] >= 0 and det.describe()["defect_head.members"] == 2
    # detect = fuse(the method's own scores, the head's logits on (image, map))
    # (a "resize" detector's head reads the model-size image and map)
    probe = _parts(5, gen, True)
    res = det.detect(probe)
    seen = probe if mode == "tile" else resize(probe, (16, 16))
    s0, m0 = det._score_maps(seen)
    want = det.head.fuse(s0, det.head.logits(head_inputs(seen, m0, TINY_HEAD["size"])))
    torch.testing.assert_close(res.scores, want)
    torch.testing.assert_close(res.maps, det._score_maps(probe)[1])
    # the fusion was fitted on the validation normals: their unfused parts average to 0
    vs = v if mode == "tile" else resize(v, (16, 16))
    sv, mv = det._score_maps(vs)
    lv = det.head.logits(head_inputs(vs, mv, TINY_HEAD["size"]))
    assert abs(float(sv.mean()) - det.head.fusion["score_mean"]) < 1e-5
    assert abs(float(lv.mean()) - det.head.fusion["logit_mean"]) < 1e-4
    # the threshold is calibrated on the fused score (5 % of 8 normals: none above it)
    assert det.threshold is not None and float(det.detect(v).scores.max()) <= det.threshold.value + 1e-6
    assert_file_keeps(det, tmp_path / "d.anomgan", "head", probe, res.scores)


def test_train_refuses_a_head_it_cannot_fit_before_training(no_training):
    x = torch.rand(8, 1, 16, 16)
    with pytest.raises(ValueError, match="anomalous"):
        anomgan.train(x, method="dual-disc", defect_head=True)
    with pytest.raises(ValueError, match="validation"):
        anomgan.train(x, anomalous=x[:2], method="dual-disc", defect_head=True, validation_fraction=0)
    with pytest.raises(ValueError, match="at least 2, got 1"):
        anomgan.train(x, anomalous=x[:2], method="dual-disc", defect_head=True, validation=x[:1])
    with pytest.raises(ValueError, match="map_norm"):
        anomgan.train(x, anomalous=x[:2], method="dual-disc", defect_head=True,
                      scoring={"image_score": "patch_topn", "map_norm": "position"})
    with pytest.raises(ValueError, match="unknown setting"):
        anomgan.train(x, anomalous=x[:2], method="dual-disc", defect_head={"member": 2})


def test_fit_defect_head_checks_its_images(one_thread):
    gen = torch.Generator().manual_seed(2)
    det = Detector(make("dual-disc", image_size=16), input_mode="tile",
                   scoring={"image_score": "patch_topn", "patch": 8, "stride": 4, "n": 2})
    x, a = _parts(6, gen, size=16), _parts(3, gen, True, size=16)
    with pytest.raises(ValueError, match="fusion_normal needs at least 2"):
        det.fit_defect_head(x, a, x[:1], TINY_HEAD)
    with pytest.raises(ValueError, match="defects: .*smaller"):
        det.fit_defect_head(x, torch.rand(2, 1, 8, 8), x, TINY_HEAD)
    with pytest.raises(TypeError, match="normal"):
        det.fit_defect_head("not images", a, x, TINY_HEAD)
    assert det.head is None
    pos = Detector(make("dual-disc", image_size=16), input_mode="tile",
                   scoring={"image_score": "patch_topn", "map_norm": "position"})
    with pytest.raises(ValueError, match="map_norm"):
        pos.fit_defect_head(x, a, x, TINY_HEAD)


def test_a_file_missing_a_head_tensor_is_a_bundle_error(tmp_path, one_thread):
    gen = torch.Generator().manual_seed(3)
    det = Detector(make("dual-disc", image_size=16), input_mode="tile",
                   scoring={"image_score": "patch_topn", "patch": 8, "stride": 4, "n": 2})
    x = _parts(6, gen, size=16)
    det.fit_defect_head(x, _parts(3, gen, True, size=16), x, {**TINY_HEAD, "steps": 2})
    p = tmp_path / "d.anomgan"
    det.save(p)
    tensors, meta, _ = load_bundle(p, kind="detector", max_format_version=99)
    del tensors["head.1.logit.weight"]
    save_bundle(p, tensors, meta, kind="detector", format_version=1)
    with pytest.raises(BundleError, match="do not fit together"):
        anomgan.load(p)
