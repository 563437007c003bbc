"""Issue #16 (items 2-4): resume budgets, image pixel limit, full disk, SIGTERM, stale temp files."""
import os
import signal
import struct
import time
import warnings
import zlib

import pytest
import torch

from anomgan import fileio
from anomgan.apps.cli import EXIT_USER_ERROR, main
from anomgan.data import ingest
from anomgan.data.ingest import ImageFileError, as_images, load_images, to_batch
from anomgan.fileio import WriteError, load_bundle, save_bundle
from anomgan.models import get_method
from anomgan.training import CHECKPOINT_NAME, TrainingInterrupted, fit, load_checkpoint
from image_files import write_pngs  # noqa: E402
from models_helpers import one_thread  # noqa: F401,E402  (autouse: one torch thread)

TINY_GAN = dict(width=8, max_width=16, z_dim=4)
GANOMALY = ["--method", "ganomaly", "--hparam", "z_dim=8", "--hparam", "width=8", "--hparam", "max_width=16"]
TINY = ["--size", "16", "--batch-size", "4", "--quiet"]


def _data(n, seed, c=1, s=16):
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed))


def _noisy_run(**kw):
    args = dict(steps=7, stage_steps={"gan": 4}, batch_size=4, anomaly_batch_size=2, seed=11, progress=False,
                kmeans_clusters=2, **TINY_GAN)
    args.update(kw)
    return fit(_data(10, 0), _data(5, 1), "noisy-gan", **args)


# ---- resume with a smaller budget than the checkpoint already ran --------------------------------
@pytest.fixture(scope="module")
def noisy_ckpt(tmp_path_factory):
    """A noisy-gan checkpoint after its last step 7 (gan: 4 steps, encoder: 3)."""
    d = tmp_path_factory.mktemp("noisy")
    _noisy_run(checkpoint_dir=d)
    return str(d / CHECKPOINT_NAME)


def test_resume_with_fewer_total_steps_than_the_checkpoint_is_refused(noisy_ckpt):
    with pytest.raises(ValueError, match=r"already run 7 step.*steps=5.*5 step\(s\) in total.*steps >= 7"):
        _noisy_run(steps=5, stage_steps={"gan": 2}, resume=noisy_ckpt)
    assert load_checkpoint(noisy_ckpt)[0]["step"] == 7


def test_resume_with_a_smaller_stage_budget_is_refused(noisy_ckpt):
    # the checkpoint's stage (encoder, 3 steps run) would get 2
    with pytest.raises(ValueError, match=r"3 of them in stage 'encoder'.*gives that stage 2 step"):
        _noisy_run(steps=8, stage_steps={"gan": 6}, resume=noisy_ckpt)
    # a finished stage (gan, 4 steps run) would get 3
    with pytest.raises(ValueError, match=r"4 of them in the finished stage 'gan'.*gives that stage 3 step"):
        _noisy_run(steps=9, stage_steps={"gan": 3}, resume=noisy_ckpt)
    more = _noisy_run(steps=9, resume=noisy_ckpt, stage_steps={"gan": 4})  # more steps: continues
    assert [h["step"] for h in more.history] == [8, 9]


def test_resume_with_fewer_epochs_than_the_checkpoint_is_refused(tmp_path):
    kw = dict(batch_size=4, progress=False, z_dim=8, width=8, max_width=16, checkpoint_dir=tmp_path)
    fit(_data(8, 0), None, "ganomaly", epochs=2, **kw)  # 2 epochs of 2 batches: 4 steps
    with pytest.raises(ValueError, match=r"already run 4 step.*epochs=1.*2 step\(s\) in total"):
        fit(_data(8, 0), None, "ganomaly", epochs=1, resume=tmp_path, **kw)


def test_cli_resume_with_fewer_steps_exits_2_naming_both(tmp_path, capsys):
    normal = write_pngs(tmp_path / "normal", 8, 0)
    ckdir = tmp_path / "ck"
    argv = ["train", "--normal", normal, "--out", str(tmp_path / "m.anomgan"), "--checkpoint-dir", str(ckdir),
            *TINY, *GANOMALY]
    assert main([*argv, "--steps", "3"]) == 0
    capsys.readouterr()
    assert main([*argv, "--steps", "2", "--resume", str(ckdir / CHECKPOINT_NAME)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("anomgan: error: resume: ") and "already run 3 step" in err and "--steps 3" in err, err


# ---- the image pixel limit -------------------------------------------------------------------------
def _png_header_only(path, w, h, mode=0):
    """A PNG declaring w x h grey pixels with (almost) no data: tiny to write, a bomb to decode."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, mode, 0, 0, 0)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                 + chunk(b"IEND", b""))
    return str(path)


@pytest.mark.parametrize("reader", [lambda p: as_images([p]), lambda p: load_images([p]), lambda p: to_batch([p]),
                                    lambda p: as_images(os.path.dirname(p))])
def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch, reader):
    big = _png_header_only(tmp_path / "big.png", 12000, 12000)  # 144 MP > 50 MP
    from PIL import ImageFile

    def no_decoding(self, *a, **k):
        raise AssertionError("decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageFileError, match=r"big\.png.*12000x12000.*144000000 pixels.*limit of 50000000"):
        reader(big)


def test_the_pixel_limit_setting(tmp_path, monkeypatch):
    small = write_pngs(tmp_path / "f", 1, 0, size=20) + "/img00.png"  # 400 pixels
    assert as_images([small]).shape == (1, 1, 20, 20)
    monkeypatch.setattr(ingest, "MAX_IMAGE_PIXELS", 399)
    with pytest.raises(ImageFileError, match=r"20x20 .* 400 pixels.*limit of 399"):
        to_batch([small])
    monkeypatch.setenv("ANOMGAN_MAX_IMAGE_PIXELS", "400")  # the variable overrides the constant
    assert to_batch([small]).shape == (1, 1, 20, 20)
    monkeypatch.setenv("ANOMGAN_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(ImageFileError, match="limit of 100 .*ANOMGAN_MAX_IMAGE_PIXELS"):
        as_images([small])
    with pytest.warns(UserWarning, match="skipping.*limit of 100"), pytest.raises(ValueError, match="no readable"):
        as_images([small], on_error="skip")
    from PIL import Image
    with pytest.raises(ImageFileError, match="limit of 100"):  # a PIL image too
        as_images([Image.open(small)])
    monkeypatch.setenv("ANOMGAN_MAX_IMAGE_PIXELS", "0")  # no limit
    assert as_images([small]).shape == (1, 1, 20, 20)
    monkeypatch.setenv("ANOMGAN_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="ANOMGAN_MAX_IMAGE_PIXELS='lots'"):
        as_images([small])


def test_pillows_own_bomb_error_and_warning_come_out_as_image_file_errors(tmp_path, monkeypatch):
    huge = _png_header_only(tmp_path / "huge.png", 20000, 20000)  # over Pillow's own error limit
    monkeypatch.setenv("ANOMGAN_MAX_IMAGE_PIXELS", "0")
    with pytest.raises(ImageFileError, match=r"huge\.png.*too large"):
        to_batch([huge])
    warn = _png_header_only(tmp_path / "warn.png", 10000, 10000)  # over Pillow's warning limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageFileError, match=r"warn\.png"):
            as_images([warn])


def test_cli_refuses_a_bomb_with_exit_2(tmp_path, capsys):
    folder = tmp_path / "normal"
    write_pngs(folder, 2, 0)
    _png_header_only(folder / "zbig.png", 20000, 20000)
    argv = ["train", "--normal", str(folder), "--out", str(tmp_path / "m.anomgan"), "--steps", "1", *TINY, *GANOMALY]
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("anomgan: error: ") and "zbig.png" in err[0], err


# ---- a full disk -------------------------------------------------------------------------------------
def _full_disk(monkeypatch, exc):
    import safetensors.torch

    def save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise exc
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


@pytest.mark.parametrize("make", [
    lambda: OSError(28, "No space left on device"),
    lambda: __import__("safetensors").SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'),
    lambda: __import__("safetensors").SafetensorError("No space left on device (os error 28)")])
def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch, make):
    p = tmp_path / "a.bundle"
    save_bundle(p, {"w": torch.ones(2)}, {}, kind="thing", format_version=1)
    before = p.read_bytes()
    _full_disk(monkeypatch, make())
    with pytest.raises(WriteError, match=rf"{p}: cannot write it, the disk is full .*previous {p} is intact") as ei:
        save_bundle(p, {"w": torch.zeros(2)}, {}, kind="thing", format_version=1)
    assert isinstance(ei.value, OSError) and ei.value.errno == 28 and ei.value.filename == str(p)
    assert p.read_bytes() == before and os.listdir(tmp_path) == ["a.bundle"]
    with pytest.raises(WriteError, match=rf"{tmp_path / 'new.bundle'} was not created"):
        save_bundle(tmp_path / "new.bundle", {"w": torch.zeros(2)}, {}, kind="thing", format_version=1)
    assert os.listdir(tmp_path) == ["a.bundle"]


def test_a_full_disk_in_atomic_write_bytes(tmp_path, monkeypatch):
    p = tmp_path / "s.json"
    fileio.atomic_write_text(p, "old")
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(WriteError, match="previous .*s.json is intact"):
        fileio.atomic_write_text(p, "new")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["s.json"]


def test_other_safetensors_errors_are_not_write_errors(tmp_path, monkeypatch):
    _full_disk(monkeypatch, __import__("safetensors").SafetensorError("some tensor is not contiguous"))
    with pytest.raises(Exception) as ei:
        save_bundle(tmp_path / "x.bundle", {"w": torch.ones(2)}, {}, kind="thing", format_version=1)
    assert not isinstance(ei.value, OSError)
    assert os.listdir(tmp_path) == []


def test_cli_full_disk_while_checkpointing_exits_2(tmp_path, monkeypatch, capsys):
    normal = write_pngs(tmp_path / "normal", 8, 0)
    ckdir = tmp_path / "ck"
    argv = ["train", "--normal", normal, "--out", str(tmp_path / "m.anomgan"), "--checkpoint-dir", str(ckdir),
            "--checkpoint-every", "1", *TINY, *GANOMALY]
    assert main([*argv, "--steps", "1"]) == 0
    before = (ckdir / CHECKPOINT_NAME).read_bytes()
    capsys.readouterr()
    _full_disk(monkeypatch, OSError(28, "No space left on device"))
    assert main([*argv, "--steps", "2", "--resume", str(ckdir / CHECKPOINT_NAME)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("anomgan: error: "), err
    assert f"{ckdir / CHECKPOINT_NAME}: cannot write it, the disk is full" in err[0] and "is intact" in err[0]
    assert (ckdir / CHECKPOINT_NAME).read_bytes() == before and os.listdir(ckdir) == [CHECKPOINT_NAME]


# ---- stale temporary files of killed writes ----------------------------------------------------------
def test_stale_temp_files_of_the_same_target_are_removed_on_the_next_write(tmp_path):
    old = time.time() - 3600
    stale = [tmp_path / ".tmp-a.bundle.0123456789ab", tmp_path / ".tmp-a.bundle.ffffffffffff"]
    keep = [tmp_path / ".tmp-b.bundle.0123456789ab", tmp_path / ".tmp-a.bundle.notmine", tmp_path / "other.txt"]
    for f in stale + keep:
        f.write_bytes(b"x" * 10)
        os.utime(f, (old, old))
    newer = tmp_path / ".tmp-a.bundle.aaaaaaaaaaaa"  # a concurrent write that started after this one
    newer.write_bytes(b"x")
    os.utime(newer, (time.time() + 3600,) * 2)
    save_bundle(tmp_path / "a.bundle", {"w": torch.ones(2)}, {}, kind="thing", format_version=1)
    assert sorted(os.listdir(tmp_path)) == sorted(["a.bundle", newer.name] + [f.name for f in keep])
    assert load_bundle(tmp_path / "a.bundle", kind="thing", max_format_version=1)[0]["w"].tolist() == [1, 1]


def test_a_checkpoint_write_removes_a_killed_writes_temp_file(tmp_path):
    tmp_path.joinpath("ck").mkdir()
    stale = tmp_path / "ck" / ".tmp-last.ckpt.0123456789ab"
    stale.write_bytes(b"x" * 100)
    os.utime(stale, (time.time() - 60,) * 2)
    _noisy_run(steps=2, stage_steps={"gan": 1}, checkpoint_dir=tmp_path / "ck")
    assert os.listdir(tmp_path / "ck") == [CHECKPOINT_NAME]


# ---- SIGTERM ---------------------------------------------------------------------------------------
def test_sigterm_finishes_the_step_checkpoints_and_restores_the_handlers(tmp_path, monkeypatch):
    cls = get_method("noisy-gan")
    real_step = cls.train_step
    calls = {"n": 0}

    def term_at_3(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, *a, **k)

    monkeypatch.setattr(cls, "train_step", term_at_3)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    ckpt = tmp_path / "cut" / CHECKPOINT_NAME
    with pytest.raises(TrainingInterrupted, match=f"stopped by SIGTERM after step 3; resume from {ckpt}") as ei:
        _noisy_run(checkpoint_dir=tmp_path / "cut", checkpoint_every=100)
    assert (ei.value.step, ei.value.checkpoint, ei.value.signum) == (3, str(ckpt), signal.SIGTERM)
    assert calls["n"] == 3 and (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert load_checkpoint(ckpt)[0]["step"] == 3
