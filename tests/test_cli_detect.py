"""`anomgan detect` reliability (issue #16 item 6): an unreadable file (stop, or --skip-unreadable),
scores written as each batch finishes, and Ctrl-C keeping what was scored (exit 130)."""
import csv
import json
import os
import shutil

import numpy as np
import pytest

import anomgan
from anomgan.apps.cli import EXIT_INTERRUPTED, EXIT_SKIPPED, EXIT_USER_ERROR, main
from anomgan.detector import Detector
from anomgan.scoring.result import DetectionResult
from image_files import write_pngs  # noqa: E402
from models_helpers import one_thread  # noqa: F401,E402  (autouse: one torch thread)
from test_cli import _one_error_line, folders, ganomaly_model  # noqa: F401  (fixtures)


@pytest.fixture
def mixed(folders, tmp_path):
    """Five good PNGs and, sorted between img02.png and img03.png, one corrupt file:
    (folder, the good paths in the order detect takes them, the corrupt path)."""
    d = write_pngs(tmp_path / "mixed", 5, 7)
    bad = os.path.join(d, "img02x.png")
    shutil.copy(folders["bad"], bad)
    return d, [os.path.join(d, f"img{i:02d}.png") for i in range(5)], bad


def _csv_names(path):
    with open(path, newline="") as fh:
        return [r["name"] for r in csv.DictReader(fh)]


def _out_names(path):
    if str(path).endswith(".json"):
        return [r["name"] for r in json.loads(path.read_text())["images"]]
    return _csv_names(path)


def test_unreadable_file_stops_but_what_was_scored_is_written(mixed, ganomaly_model, tmp_path, capsys):
    d, good, bad = mixed
    out = tmp_path / "s.csv"
    rc = main(["detect", "--model", ganomaly_model, d, "--out", str(out), "--batch-size", "2", "--quiet"])
    assert rc == EXIT_USER_ERROR
    cap = capsys.readouterr()
    _one_error_line(cap.err, bad, "--skip-unreadable", str(out))
    # batch 1 whole, then batch 2 file by file up to the corrupt one
    assert _csv_names(out) == good[:3]
    assert [ln.split("\t")[-1] for ln in cap.out.splitlines()] == good[:3]


def test_skip_unreadable_scores_the_others_lists_the_skipped_and_exits_3(mixed, ganomaly_model, tmp_path,
                                                                         capsys):
    d, good, bad = mixed
    out, report = tmp_path / "s.csv", tmp_path / "r.html"
    rc = main(["detect", "--model", ganomaly_model, d, "--out", str(out), "--report", str(report),
               "--batch-size", "2", "--quiet", "--skip-unreadable"])
    assert rc == EXIT_SKIPPED == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"anomgan: skipped {bad}: cannot read the image (UnidentifiedImageError: cannot identify image "
        f"file {bad!r})",
        "anomgan: 1 of 6 images could not be read and were skipped; the other 5 were scored (exit status 3)"]
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == good
    expected = anomgan.detect(good, anomgan.load(ganomaly_model)).scores.numpy()
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-6)
    assert report.read_text(encoding="utf-8").count('class="card') == 5


@pytest.mark.parametrize("ext", [".csv", ".json"])
def test_ctrl_c_keeps_the_scored_batches_and_exits_130(ext, mixed, ganomaly_model, tmp_path, capsys,
                                                       monkeypatch):
    _, good, _ = mixed
    real, calls = Detector.detect, []

    def detect(self, batch, **kw):
        calls.append(list(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, batch, **kw)

    monkeypatch.setattr(Detector, "detect", detect)
    out, report = tmp_path / f"s{ext}", tmp_path / "r.html"
    rc = main(["detect", "--model", ganomaly_model, *good, "--out", str(out), "--report", str(report),
               "--batch-size", "2", "--quiet"])
    assert rc == EXIT_INTERRUPTED
    cap = capsys.readouterr()
    assert cap.err.strip().splitlines() == [
        f"anomgan: interrupted after 2 of 5 images; scores so far in {out}; {report} not written "
        "(it is written only for a complete run)"]
    assert _out_names(out) == good[:2]
    assert [ln.split("\t")[-1] for ln in cap.out.splitlines()] == good[:2]
    assert not report.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["mixed", out.name])  # no temp file left behind


def test_a_note_is_printed_after_the_path_and_kept_in_the_csv(folders, ganomaly_model, tmp_path, capsys,
                                                              monkeypatch):
    real = DetectionResult.to_records

    def to_records(self):
        rows = real(self)
        for r in rows:
            r.setdefault("note", "")
        rows[0]["note"] = "non-finite score"
        return rows

    monkeypatch.setattr(DetectionResult, "to_records", to_records)
    png = os.path.join(folders["test"], "img00.png")
    out = tmp_path / "s.csv"
    assert main(["detect", "--model", ganomaly_model, png, "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(f"\t{png}\tnon-finite score")
    with open(out, newline="") as fh:
        assert [r["note"] for r in csv.DictReader(fh)] == ["non-finite score"]


@pytest.mark.parametrize("mode", ["none", "exact", "bf16"])
def test_detect_compile_modes_score_like_the_plain_path(mode, folders, ganomaly_model, tmp_path, capsys,
                                                        monkeypatch):
    """--compile picks the scoring path (default exact: the inference copy); scores match the
    plain API path (exact within 1e-5, bf16 within bfloat16 rounding, with a warning)."""
    import torch

    calls, real = [], Detector.compile
    monkeypatch.setattr(Detector, "compile", lambda self, **kw: calls.append(kw) or real(self, **kw))
    out = tmp_path / "s.csv"
    args = ["detect", "--model", ganomaly_model, folders["test"], "--out", str(out)]
    assert main(args + (["--compile", mode] if mode != "exact" else [])) == 0
    err = capsys.readouterr().err
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    got = np.array([float(r["score"]) for r in rows])
    plain = anomgan.detect([r["name"] for r in rows], anomgan.load(ganomaly_model)).scores.numpy()
    assert calls == {"none": [], "exact": [{}], "bf16": [{"dtype": torch.bfloat16}]}[mode]
    if mode == "bf16":
        assert "--compile bf16" in err and "threshold" in err
        np.testing.assert_allclose(got, plain, rtol=3e-2, atol=1e-3)
    else:
        assert "bf16" not in err
        np.testing.assert_allclose(got, plain, rtol=0, atol=1e-5)


def test_detect_compile_rejects_an_unknown_mode(ganomaly_model, folders, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["detect", "--model", ganomaly_model, folders["test"], "--compile", "int8"])
    assert exc.value.code == 2
    assert "--compile" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [
    ["--input-mode", "tile", "--defect-head", "members=1", "steps=3", "size=16", "width=4"],
    ["--segmenter", "steps=2", "width=4", "inputs=image+residual"]])
def test_detect_compiled_by_default_equals_the_plain_path_with_head_segmenter_and_tiles(extra, folders,
                                                                                       tmp_path):
    from test_cli import DUAL, TINY

    model = str(tmp_path / "m.anomgan")
    assert main(["train", "--normal", folders["normal"], "--anomalous", folders["anomalous"], "--out", model,
                 "--steps", "2", "--val-fraction", "0.25", "--scoring", "image_score=patch_topn", *extra,
                 *TINY, *DUAL]) == 0
    scores = {}
    for mode in ("exact", "none"):
        out = tmp_path / f"{mode}.csv"
        assert main(["detect", "--model", model, folders["test"], "--out", str(out), "--compile", mode,
                     "--quiet"]) == 0
        with open(out, newline="") as fh:
            scores[mode] = np.array([float(r["score"]) for r in csv.DictReader(fh)])
    assert len(scores["exact"]) == 4
    np.testing.assert_allclose(scores["exact"], scores["none"], rtol=0, atol=1e-5)
