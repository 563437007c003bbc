"""Bundles (checkpoints, detectors): atomic writes and refusal of bad files."""
import json
import os
import stat

import pytest
import torch

from anomgan.fileio import BundleError, atomic_write_text, load_bundle, save_bundle


def test_round_trip(tmp_path):
    p = tmp_path / "a.bundle"
    t = {"w": torch.randn(3, 4), "i": torch.arange(5)}
    save_bundle(p, t, {"x": [1, 2], "s": "é"}, kind="thing", format_version=2)
    got, meta, ver = load_bundle(p, kind="thing", max_format_version=2)
    assert ver == 2 and meta == {"x": [1, 2], "s": "é"}
    assert torch.equal(got["w"], t["w"]) and torch.equal(got["i"], t["i"])
    assert [f for f in os.listdir(tmp_path)] == ["a.bundle"]  # no temp files left


def test_failed_write_leaves_old_file(tmp_path):
    p = tmp_path / "a.bundle"
    save_bundle(p, {"w": torch.ones(2)}, {}, kind="thing", format_version=1)
    before = p.read_bytes()
    with pytest.raises(Exception):
        save_bundle(p, {"w": "not a tensor"}, {}, kind="thing", format_version=1)
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.bundle"]


def test_refuses_bad_files(tmp_path):
    p = tmp_path / "a.bundle"
    save_bundle(p, {"w": torch.randn(100)}, {"k": 1}, kind="thing", format_version=3)
    data = p.read_bytes()
    with pytest.raises(BundleError, match="no such file"):
        load_bundle(tmp_path / "missing", kind="thing", max_format_version=3)
    (tmp_path / "trunc").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated or corrupted"):
        load_bundle(tmp_path / "trunc", kind="thing", max_format_version=3)
    (tmp_path / "junk").write_bytes(b"\x80\x04\x95 pickle? no thanks" * 10)
    with pytest.raises(BundleError):
        load_bundle(tmp_path / "junk", kind="thing", max_format_version=3)
    with pytest.raises(BundleError, match="newer"):
        load_bundle(p, kind="thing", max_format_version=2)
    with pytest.raises(BundleError, match="expected a 'other'"):
        load_bundle(p, kind="other", max_format_version=3)
    from safetensors.torch import save_file
    save_file({"w": torch.ones(1)}, str(tmp_path / "plain"))
    with pytest.raises(BundleError, match="not an anomgan"):
        load_bundle(tmp_path / "plain", kind="thing", max_format_version=3)
    save_file({"w": torch.ones(1)}, str(tmp_path / "badjson"), metadata={"anomgan": "{nope"})
    with pytest.raises(BundleError, match="corrupted anomgan metadata"):
        load_bundle(tmp_path / "badjson", kind="thing", max_format_version=3)


def test_atomic_text(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_text(p, json.dumps({"a": 1}))
    assert json.loads(p.read_text()) == {"a": 1}


def test_atomic_writes_get_the_permissions_open_would_give(tmp_path):
    """New files: 0o666 less the umask (not mkstemp's 0o600: a report must be readable by
    whoever may read the folder); replaced files keep their mode."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.html", "x")
        assert stat.S_IMODE(os.stat(tmp_path / "new.html").st_mode) == 0o644
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.json", "x")
        assert stat.S_IMODE(os.stat(tmp_path / "private.json").st_mode) == 0o600
        os.chmod(tmp_path / "new.html", 0o640)
        atomic_write_text(tmp_path / "new.html", "y")
        assert stat.S_IMODE(os.stat(tmp_path / "new.html").st_mode) == 0o640
    finally:
        os.umask(old)
