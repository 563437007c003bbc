"""The `anomgan` command: help, train -> detect with every output, one-line user errors, --debug,
Ctrl-C during training (exit 130, a resumable checkpoint) and the module / console-script entry."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import anomgan
from anomgan.apps.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USER_ERROR, main
from anomgan.training import load_checkpoint
from image_files import write_pngs  # noqa: E402
from models_helpers import one_thread  # noqa: F401,E402  (autouse: one torch thread)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GANOMALY = ["--method", "ganomaly", "--hparam", "z_dim=8", "--hparam", "width=8", "--hparam", "max_width=16"]
DUAL = ["--method", "dual-disc", "--hparam", "width=4", "--hparam", "d_width=4", "--hparam", "max_width=16"]
TINY = ["--size", "16", "--batch-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    d = {"root": root, "normal": write_pngs(root / "normal", 12, 0), "anomalous": write_pngs(root / "anomalous", 4, 1, spot=True),
         "test": write_pngs(root / "test", 3, 2)}
    write_pngs(root / "test" / "sub", 1, 3, spot=True)  # folders are searched recursively
    d["extra"] = write_pngs(root / "extra", 1, 4, spot=True)
    d["bad"] = str(root / "bad.png")
    with open(d["bad"], "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n but then nothing an image decoder can read")
    d["junk"] = str(root / "junk.anomgan")
    with open(d["junk"], "wb") as fh:
        fh.write(np.random.default_rng(5).bytes(4096))
    return d


@pytest.fixture(scope="module")
def ganomaly_model(folders):
    out = str(folders["root"] / "g.anomgan")
    assert main(["train", "--normal", folders["normal"], "--out", out, "--steps", "3", *TINY, *GANOMALY]) == 0
    return out


def _one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("anomgan: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, err)


# ---- help -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command, options", [
    ([], ["train", "detect", "demo", "bench", "--debug"]),
    (["train"], ["--normal", "--anomalous", "--method", "--out", "--size", "--steps", "--resume",
                 "--checkpoint-dir", "--hparam", "--scoring", "--target-fpr", "--device", "--lr-decay-every"]),
    (["detect"], ["--model", "--out", "--report", "--threshold", "--batch-size", "--backend"]),
    (["demo"], ["--high-res", "--out-dir", "--steps", "--digit"]),
    (["bench"], ["--size", "--batch"]),
], ids=["anomgan", "train", "detect", "demo", "bench"])
def test_help(command, options, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: anomgan")
    for o in options:
        assert o in out, o


# ---- train -> detect ------------------------------------------------------------------------
def test_train_scoring_settings_are_stored_in_the_detector(folders, tmp_path):
    model = str(tmp_path / "s.anomgan")
    assert main(["train", "--normal", folders["normal"], "--anomalous", folders["anomalous"], "--out", model,
                 "--steps", "2", "--scoring", "image_score=patch_topn", "--scoring", "patch=4",
                 "--scoring", "map_norm=position", "--scoring", "map_norm_floor=0.02", *TINY, *DUAL]) == 0
    det = anomgan.load(model)
    assert (det.scoring.image_score, det.scoring.patch, det.scoring.map_norm) == ("patch_topn", 4, "position")
    assert det.scoring.map_norm_floor == 0.02
    assert det.reference is not None and det.reference.size == (16, 16)


def test_train_defect_head_flag_with_and_without_settings(folders, tmp_path):
    for extra, members in ((["--defect-head", "members=1", "steps=3", "size=16", "width=4"], 1), ([], None)):
        model = str(tmp_path / f"h{members}.anomgan")
        assert main(["train", "--normal", folders["normal"], "--anomalous", folders["anomalous"], "--out", model,
                     "--steps", "2", "--val-fraction", "0.25", "--scoring", "image_score=patch_topn", *extra,
                     *TINY, *DUAL]) == 0
        det = anomgan.load(model)
        assert (det.head is None) if members is None else (det.head.config.members == members)
        assert main(["export", "--model", model, "--out", str(tmp_path / f"h{members}.onnx")]) == 0
        assert (tmp_path / f"h{members}.head.onnx").exists() == (members is not None)
    rc = main(["train", "--normal", folders["normal"], "--out", str(tmp_path / "x.anomgan"), "--steps", "2",
               "--defect-head", *TINY, *DUAL])
    assert rc == EXIT_USER_ERROR


def test_train_features_flag_with_settings_and_without_its_package(folders, tmp_path, monkeypatch, capsys):
    model = str(tmp_path / "f.anomgan")
    assert main(["train", "--normal", folders["normal"], "--anomalous", folders["anomalous"], "--out", model,
                 "--steps", "2", "--val-fraction", "0.25", "--scoring", "image_score=patch_topn",
                 "--features", "size=32", "bank=20", *TINY, *DUAL]) == 0
    det = anomgan.load(model)
    assert det.features.terms == ("logistic", "patch") and det.features.bank.shape[0] == 20
    import anomgan.features.efficientnet_lite as effnet

    monkeypatch.setitem(effnet.BACKBONES, "efficientnet-lite0",
                        ("no_such_weights_pkg",) + effnet.BACKBONES["efficientnet-lite0"][1:])
    capsys.readouterr()
    rc = main(["train", "--normal", folders["normal"], "--anomalous", folders["anomalous"], "--out",
               str(tmp_path / "g.anomgan"), "--steps", "2", "--features", *TINY, *DUAL])
    assert rc == EXIT_USER_ERROR and "anomgan[pretrained]" in capsys.readouterr().err


def test_train_segmenter_flag_with_settings(folders, tmp_path):
    model = str(tmp_path / "s.anomgan")
    assert main(["train", "--normal", folders["normal"], "--anomalous", folders["anomalous"], "--out", model,
                 "--steps", "2", "--val-fraction", "0.25", "--scoring", "image_score=patch_topn",
                 "--segmenter", "steps=2", "width=4", "inputs=image+residual", *TINY, *DUAL]) == 0
    det = anomgan.load(model)
    assert det.segmenter is not None and det.segmenter.config.inputs == "image+residual"
    assert det.segmenter.config.steps == 2
    rc = main(["train", "--normal", folders["normal"], "--anomalous", folders["anomalous"],
               "--out", str(tmp_path / "x.anomgan"), "--steps", "2", "--scoring", "image_score=native",
               "--segmenter", *TINY, *DUAL])
    assert rc == EXIT_USER_ERROR


def test_train_then_detect_writes_csv_json_and_report(folders, tmp_path, capsys):
    model = str(tmp_path / "line3.anomgan")
    rc = main(["train", "--normal", folders["normal"], "--anomalous", folders["anomalous"], "--out", model,
               "--steps", "4", "--checkpoint-dir", str(tmp_path / "ck"), "--lr-decay-every", "2",
               *TINY, *DUAL])
    assert rc == 0
    assert f"wrote {model}" in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "ck" / "last.ckpt")
    _, meta = load_checkpoint(tmp_path / "ck" / "last.ckpt")
    assert meta["config"]["lr_decay"] == [2, 0.5]
    det = anomgan.load(model)
    assert (det.method_name, det.image_size, det.channels) == ("dual-disc", 16, 1)
    assert det.info["normal_images"] + det.info["validation_images"] == 12
    assert det.info["anomalous_images"] == 4
    assert det.threshold is not None

    images = [folders["test"], os.path.join(folders["extra"], "img00.png")]
    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(folders["test"]) for f in fs)
    paths.append(images[1])
    expected = anomgan.detect(paths, det)

    csv_path, json_path, report = tmp_path / "x.csv", tmp_path / "x.json", tmp_path / "r.html"
    assert main(["detect", "--model", model, *images, "--out", str(csv_path), "--report", str(report),
                 "--quiet", "--batch-size", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len([ln for ln in out if "\t" in ln]) == 5
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == paths
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected.scores.numpy(), rtol=1e-6)
    assert [r["anomalous"] == "True" for r in rows] == expected.labels.tolist()
    with open(report, encoding="utf-8") as fh:
        html = fh.read()
    assert html.count('class="card') == 5 and all(os.path.basename(p) in html for p in paths)

    assert main(["detect", "--model", model, *images, "--out", str(json_path), "--quiet",
                 "--threshold", "1e9"]) == 0
    doc = json.loads(json_path.read_text())
    assert doc["threshold"] == 1e9
    assert [r["name"] for r in doc["images"]] == paths
    assert not any(r["anomalous"] for r in doc["images"])
    np.testing.assert_allclose([r["score"] for r in doc["images"]], expected.scores.numpy(), rtol=1e-6)
    assert "ANOMALOUS" not in capsys.readouterr().out


# ---- user errors ----------------------------------------------------------------------------
def _error_cases(f, model, tmp):
    png = os.path.join(f["test"], "img00.png")
    return {
        "missing --normal": (["train", "--normal", str(tmp / "nope"), "--out", str(tmp / "m.anomgan")], "nope"),
        "--normal is a file": (["train", "--normal", png, "--out", str(tmp / "m.anomgan")], "not a folder"),
        "unknown method": (["train", "--normal", f["normal"], "--out", str(tmp / "m.anomgan"), "--method", "nope",
                            "--steps", "1", *TINY], "nope"),
        "unknown hparam": (["train", "--normal", f["normal"], "--out", str(tmp / "m.anomgan"), "--hparam",
                            "widht=4", "--steps", "1", *TINY, "--method", "ganomaly"], "widht"),
        "unknown scoring setting": (["train", "--normal", f["normal"], "--out", str(tmp / "m.anomgan"), "--scoring",
                                     "map_norm=pixel", "--steps", "1", *TINY, "--method", "ganomaly"], "map_norm"),
        "scoring without =": (["train", "--normal", f["normal"], "--out", str(tmp / "m.anomgan"), "--scoring",
                               "patch", "--steps", "1", *TINY, "--method", "ganomaly"], "NAME=VALUE"),
        "missing --resume": (["train", "--normal", f["normal"], "--out", str(tmp / "m.anomgan"), "--resume",
                              str(tmp / "none.ckpt")], "none.ckpt"),
        "missing image": (["detect", "--model", model, str(tmp / "gone.png")], "gone.png"),
        "unreadable image": (["detect", "--model", model, f["bad"], "--quiet"], "bad.png"),
        "model is random bytes": (["detect", "--model", f["junk"], png], "junk.anomgan"),
        "model is a PNG": (["detect", "--model", png, png], "img00.png"),
        "missing model": (["detect", "--model", str(tmp / "no.anomgan"), png], "no.anomgan"),
        "--out extension": (["detect", "--model", model, png, "--out", str(tmp / "x.txt")], ".csv or .json"),
        "argparse: missing option": (["detect", png], "--model"),
        "argparse: bad int": (["train", "--normal", f["normal"], "--out", "m", "--steps", "many"], "many"),
    }


CASES = ["missing --normal", "--normal is a file", "unknown method", "unknown hparam", "unknown scoring setting",
         "scoring without =", "missing --resume",
         "missing image", "unreadable image", "model is random bytes", "model is a PNG", "missing model",
         "--out extension", "argparse: missing option", "argparse: bad int"]


@pytest.mark.parametrize("case", CASES)
def test_user_mistakes_print_one_line_and_exit_2(case, folders, ganomaly_model, tmp_path, capsys):
    cases = _error_cases(folders, ganomaly_model, tmp_path)
    assert sorted(cases) == sorted(CASES)
    argv, needle = cases[case]
    with pytest.raises(SystemExit) as e:  # argparse's own errors exit; the others return
        sys.exit(main(argv))
    assert e.value.code == EXIT_USER_ERROR
    cap = capsys.readouterr()
    _one_error_line(cap.err, needle)
    if case == "--out extension":
        assert cap.out == "" and not os.path.exists(tmp_path / "x.txt")  # refused before any work


def test_debug_shows_the_traceback(folders, capsys):
    png = os.path.join(folders["test"], "img00.png")
    with pytest.raises(ValueError, match="junk.anomgan"):
        main(["--debug", "detect", "--model", folders["junk"], png])
    assert "anomgan: error" not in capsys.readouterr().err


# ---- Ctrl-C, module entry, console script ---------------------------------------------------
def _env():
    """The subprocess imports the same anomgan as this process (the worktree or the install)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(anomgan.__file__)))
    return dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1", TRITON_INTERPRET="1")


@pytest.mark.parametrize("signum, status, said", [
    (signal.SIGINT, EXIT_INTERRUPTED, "training interrupted after step "),
    (signal.SIGTERM, EXIT_TERMINATED, "training stopped by SIGTERM after step "),  # docker stop
])
def test_a_signal_during_training_leaves_a_resumable_checkpoint(folders, tmp_path, signum, status, said):
    model, ckdir = str(tmp_path / "m.anomgan"), tmp_path / "ck"
    ckpt = ckdir / "last.ckpt"
    argv = ["train", "--normal", folders["normal"], "--out", model, "--checkpoint-dir", str(ckdir),
            "--checkpoint-every", "1", *TINY, *GANOMALY]
    proc = subprocess.Popen([sys.executable, "-m", "anomgan", *argv, "--steps", "1000000"], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not ckpt.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.2)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == status, (out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"anomgan: {said}") and "Traceback" not in err, err
    assert f"--resume {ckpt}" in last
    assert not os.path.exists(model)
    state, _ = load_checkpoint(ckpt)
    step = state["step"]
    assert f"after step {step};" in last
    assert main([*argv, "--steps", str(step + 2), "--resume", str(ckpt)]) == 0
    assert load_checkpoint(ckpt)[0]["step"] == step + 2
    assert anomgan.load(model).method_name == "ganomaly"


def test_module_and_console_script_entry_points(tmp_path):
    argv = ["detect", "--model", str(tmp_path / "no.anomgan"), "x.png"]
    r = subprocess.run([sys.executable, "-m", "anomgan", *argv], cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == EXIT_USER_ERROR
    _one_error_line(r.stderr, "no.anomgan")
    with open(os.path.join(ROOT, "setup.py")) as fh:
        assert '"anomgan=anomgan.apps.cli:main"' in fh.read()
    script = shutil.which("anomgan", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if script is None:
        pytest.skip("the `anomgan` console script is not installed here (`pip install .` installs it)")
    r = subprocess.run([script, *argv], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == EXIT_USER_ERROR
    _one_error_line(r.stderr, "no.anomgan")


def test_bench_detect_table_has_compiled_rows_for_single_pass_methods():
    from anomgan.apps.bench import detect_table

    rows = detect_table(size=64, images=1, search_steps=1)
    labels = [r[0] for r in rows]
    for name in ("ganomaly", "dual-disc"):
        assert {name, f"{name}, compiled", f"{name}, compiled bf16"} <= set(labels)
    assert not [lab for lab in labels if "search steps" in lab and "compiled" in lab]
    assert all(ips > 0 and "network+search" in shares for _, ips, shares in rows)
