"""Per-pixel-position standardisation of maps (scoring.map_norm="position", issue 13):
the statistics against float64 oracles, the detector path, the file round trip, and the errors."""
import dataclasses

import pytest
import torch

import anomgan
from anomgan.detector import Detector, ScoringConfig
from anomgan.fileio import BundleError
from anomgan.scoring import metrics
from anomgan.scoring.reference import PositionReference, PositionStats

from models_helpers import make, one_thread  # noqa: F401  (fixture)


def test_stats_match_a_float64_oracle_over_uneven_chunks():
    torch.manual_seed(0)
    maps = torch.rand(13, 7, 5) ** 3
    st = PositionStats()
    for a, b in ((0, 4), (4, 5), (5, 13)):
        st.add(maps[a:b])
    ref = st.reference(floor=0.02)
    m64 = maps.double()
    assert ref.images == 13 and ref.size == (7, 5)
    torch.testing.assert_close(ref.mean.double(), m64.mean(0), atol=1e-7, rtol=0)
    torch.testing.assert_close(ref.std.double(), m64.std(0, unbiased=False), atol=1e-7, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_standardise_against_the_formula_on_odd_and_non_contiguous_maps(dtype):
    torch.manual_seed(1)
    mean, std = torch.rand(9, 11), torch.rand(9, 11) * 0.1
    ref = PositionReference(mean, std, images=5, floor=0.01)
    maps = torch.rand(3, 11, 9, dtype=dtype).transpose(1, 2)          # non-contiguous (3, 9, 11)
    z = ref.standardise(maps)
    want = (maps.double() - mean.double()) / (std.double() + 0.01)
    assert z.dtype == dtype and z.shape == maps.shape
    torch.testing.assert_close(z.double(), want, atol=1e-4 if dtype == torch.float32 else 1e-6, rtol=1e-6)
    one = PositionReference(torch.zeros(1, 1), torch.zeros(1, 1), images=2, floor=0.5)
    assert one.standardise(torch.ones(2, 1, 1)).tolist() == [[[2.0]], [[2.0]]]


def test_reference_refuses_bad_contents_and_other_sizes():
    ok = (torch.zeros(4, 4), torch.ones(4, 4))
    with pytest.raises(ValueError, match="4x4 images"):
        PositionReference(*ok, images=3, floor=0.01).standardise(torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="one shape"):
        PositionReference(torch.zeros(4, 4), torch.ones(4, 3), images=3, floor=0.01)
    with pytest.raises(ValueError, match="finite"):
        PositionReference(torch.zeros(4, 4), torch.full((4, 4), float("nan")), images=3, floor=0.01)
    with pytest.raises(ValueError, match="floor"):
        PositionReference(*ok, images=3, floor=0.0)
    with pytest.raises(TypeError, match="2-d"):
        PositionReference(torch.zeros(1, 4, 4), torch.ones(1, 4, 4), images=3, floor=0.01)
    st = PositionStats()
    st.add(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="one size"):
        st.add(torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="no maps"):
        PositionStats().reference(0.01)


@pytest.mark.parametrize("bad, err, match", [
    ({"map_norm": "pixel"}, ValueError, "map_norm"),
    ({"map_norm": "position", "map_norm_floor": 0.0}, ValueError, "map_norm_floor"),
    ({"map_norm": "position", "map_norm_floor": "0.1"}, TypeError, "map_norm_floor"),
    ({"map_norm": "position", "image_score": "native"}, ValueError, "patch_topn"),
])
def test_scoring_config_checks_the_settings(bad, err, match):
    with pytest.raises(err, match=match):
        ScoringConfig(**{"image_score": "patch_topn", **bad})


def _aligned_parts(n, gen, defect=False):
    """(n, 1, 32, 32): flat parts at 0.5 whose top-left corner is noisy in every image (a
    fixture edge), and, for defects, a faint dark spot at one place."""
    x = torch.full((n, 1, 32, 32), 0.5)
    x[:, :, :8, :8] = torch.rand(n, 1, 8, 8, generator=gen)
    if defect:
        x[:, :, 20:26, 18:24] = 0.38
    return x


def _detector(map_norm):
    torch.manual_seed(0)
    scoring = ScoringConfig(image_score="patch_topn", patch=6, stride=2, n=1, map_norm=map_norm)
    return Detector(make("dual-disc", image_size=16), scoring=scoring, input_mode="tile")


def test_position_norm_ranks_a_faint_defect_above_normal_variation_at_a_fixed_place():
    """Raw maps: the noisy corner, normal in every part, outscores the faint spot in normal and
    defective parts alike, so the score is near chance (AUROC <= 0.7). Standardised per position with statistics of other normal parts, the spot
    stands out (AUROC 1)."""
    gen = torch.Generator().manual_seed(3)
    fit, normal, bad = _aligned_parts(24, gen), _aligned_parts(10, gen), _aligned_parts(10, gen, True)
    y = torch.cat([torch.zeros(10), torch.ones(10)]).numpy()
    raw = _detector("none")
    raw_scores = torch.cat([raw.detect(normal).scores, raw.detect(bad).scores]).numpy()
    det = _detector("position")
    with pytest.raises(RuntimeError, match="fit_reference"):
        det.detect(normal)
    ref = det.fit_reference(fit)
    assert ref.size == (32, 32) and ref.images == 24
    res = det.detect(torch.cat([normal, bad]))
    assert metrics.roc_auc(y, raw_scores) <= 0.7
    assert metrics.roc_auc(y, res.scores.numpy()) == 1.0
    # the maps are the standardised raw maps, the scores their patch top-n
    raw_maps = raw.detect(torch.cat([normal, bad])).maps
    torch.testing.assert_close(res.maps, ref.standardise(raw_maps))
    torch.testing.assert_close(res.scores, det._map_scores(res.maps, None))


def test_fit_reference_subsamples_and_checks_its_input():
    gen = torch.Generator().manual_seed(4)
    det = _detector("position")
    ref = det.fit_reference(_aligned_parts(9, gen), max_images=5, seed=1)
    assert ref.images == 5
    with pytest.raises(ValueError, match="at least 2"):
        det.fit_reference(_aligned_parts(1, gen))
    with pytest.raises(ValueError, match="max_images"):
        det.fit_reference(_aligned_parts(4, gen), max_images=1)
    with pytest.raises(ValueError, match="32x32 images"):
        det.detect(torch.rand(2, 1, 40, 40))


def test_train_fits_the_reference_on_training_normals_and_the_file_keeps_it(tmp_path):
    gen = torch.Generator().manual_seed(5)
    x = _aligned_parts(20, gen)
    det = anomgan.train(x, anomalous=_aligned_parts(4, gen, True), method="dual-disc",
                        validation=_aligned_parts(6, gen), image_size=16, input_mode="tile",
                        steps=3, batch_size=4, progress=False, hparams={"width": 4, "d_width": 4},
                        scoring={"image_score": "patch_topn", "patch": 6, "stride": 2,
                                 "map_norm": "position"})
    assert det.reference is not None and det.reference.images == 20
    assert det.info["reference_images"] == 20 and "reference" in det.describe()
    probe = _aligned_parts(3, gen, True)
    before = det.detect(probe)
    det.save(tmp_path / "d.anomgan")
    back = anomgan.load(tmp_path / "d.anomgan")
    after = back.detect(probe)
    assert torch.equal(back.reference.mean, det.reference.mean)
    assert torch.equal(before.scores, after.scores) and torch.equal(before.maps, after.maps)
    with pytest.raises(ValueError, match="map_norm"):
        back.export(tmp_path / "d.onnx")
    # a file that names a reference but lost its tensors is refused, not half-read
    from anomgan.fileio import load_bundle, save_bundle
    tensors, meta, _ = load_bundle(tmp_path / "d.anomgan", kind="detector", max_format_version=1)
    del tensors["reference.std"]
    save_bundle(tmp_path / "broken.anomgan", tensors, meta, kind="detector", format_version=1)
    with pytest.raises(BundleError, match="do not fit together"):
        anomgan.load(tmp_path / "broken.anomgan")


def test_a_detector_without_position_norm_is_unchanged_by_a_reference():
    """map_norm='none' never reads the reference (old files and defaults score as before)."""
    gen = torch.Generator().manual_seed(6)
    det = _detector("none")
    x = _aligned_parts(4, gen, True)
    before = det.detect(x)
    det.reference = PositionReference(torch.ones(32, 32), torch.ones(32, 32), images=2, floor=0.01)
    after = det.detect(x)
    assert torch.equal(before.scores, after.scores) and torch.equal(before.maps, after.maps)
    det.scoring = dataclasses.replace(det.scoring, map_norm="position")
    assert not torch.equal(det.detect(x).maps, before.maps)


def test_train_checks_the_scoring_settings_before_it_trains(monkeypatch):
    """A typo in scoring= must not cost a training run: it is refused before fit starts."""
    import anomgan.training as training

    def no_fit(*a, **k):
        raise AssertionError("fit ran before the scoring settings were checked")

    monkeypatch.setattr(training, "fit", no_fit)
    with pytest.raises(ValueError, match="map_norm"):
        anomgan.train(torch.rand(8, 1, 16, 16), anomalous=torch.rand(2, 1, 16, 16), method="dual-disc",
                      steps=1, scoring={"image_score": "patch_topn", "map_norm": "pos"})


def test_resize_mode_keeps_its_reference_at_the_model_size():
    """A resize-mode detector standardises the model-size maps (before they are resized back),
    so its reference is (image_size, image_size) and any input size scores."""
    gen = torch.Generator().manual_seed(7)
    x = _aligned_parts(12, gen)
    det = anomgan.train(x, anomalous=_aligned_parts(3, gen, True), method="dual-disc", image_size=16,
                        input_mode="resize", steps=2, batch_size=4, progress=False,
                        hparams={"width": 4, "d_width": 4},
                        scoring={"image_score": "patch_topn", "patch": 4, "stride": 2, "map_norm": "position"})
    assert det.reference.size == (16, 16)
    res = det.detect(_aligned_parts(2, gen, True))
    assert res.maps.shape == (2, 32, 32) and torch.isfinite(res.scores).all()
    small = torch.nn.functional.interpolate(_aligned_parts(2, gen), size=(16, 16), mode="bilinear")
    assert det.detect(small).maps.shape == (2, 16, 16)
