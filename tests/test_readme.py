"""README.md's examples run: every ```python block, and every `anomgan train|detect|evaluate` line of
the ```bash blocks (through anomgan.apps.cli.main), in README order, in one temporary folder holding
small PNG folders named as in the README (normal/, defects/, new/, validation/, surfaces/, and the
MVTec-style bottle/).

Substitutions (documented in the README's Development section): anomgan.train is wrapped so that
every call trains tiny networks (TINY_HPARAMS) at 16x16 (a tile overlap scaled alike) for 4 steps
with 10 latent-search steps;
without CUDA, device="cuda" becomes "cpu". The first block (install + demo, and the test command)
is what CI runs itself; it is checked for its form only. A failing snippet fails the test.
"""
import dataclasses
import os
import re
import shlex

import pytest
import torch

import anomgan
import anomgan.api
from anomgan.apps.cli import main
from anomgan.detector import ScoringConfig
from image_files import write_mvtec, write_pngs  # noqa: E402
from models_helpers import one_thread  # noqa: F401,E402  (autouse: one torch thread)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_HPARAMS = {
    "noisy-gan": {"z_dim": 8, "width": 8, "max_width": 16},
    "anogan": {"z_dim": 8, "width": 8, "max_width": 16},
    "ganomaly": {"z_dim": 8, "width": 8, "max_width": 16},
    "dual-disc": {"width": 4, "d_width": 4, "max_width": 16},
}
NOT_RUN = ("pip install", "TRITON_INTERPRET=1 pytest", "FORCE_CUDA=1", "torchrun", "anomgan demo", "anomgan bench")


def readme_blocks():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)]


def shell_commands(body: str) -> list[str]:
    """Logical lines of a shell block (backslash continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


@pytest.fixture
def tiny_train(monkeypatch):
    real = anomgan.api.train
    calls = []

    def train(normal, anomalous=None, method="noisy-gan", **kw):
        scoring = kw.get("scoring") or ScoringConfig()
        if isinstance(scoring, dict):
            scoring = ScoringConfig.from_dict(scoring)
        kw.pop("epochs", None)
        if scoring.tile_overlap is not None:  # keep the overlap's share of the (now 16-pixel) tile
            scoring = dataclasses.replace(scoring, tile_overlap=scoring.tile_overlap * 16 // kw.get("image_size", 64))
        kw.update(steps=4, image_size=16, batch_size=4, progress=False,
                  hparams={**(kw.get("hparams") or {}), **TINY_HPARAMS[method]},
                  scoring=dataclasses.replace(scoring, search_steps=10))
        calls.append(method)
        return real(normal, anomalous, method, **kw)

    monkeypatch.setattr(anomgan.api, "train", train)
    monkeypatch.setattr(anomgan, "train", train)
    return calls


#: python blocks that continue another block's definitions; each is run by the named test
#: (tests/test_export.py::check_fused_recipe, for a head and for features)
FRAGMENTS = ("# score_fused.py",)


def test_first_block_is_install_demo_and_tests():
    lang, body = readme_blocks()[0]
    lines = body.splitlines()
    assert lang == "bash" and len(lines) == 2
    assert lines[0] == "pip install -r requirements.txt && pip install --no-build-isolation . && anomgan demo"
    assert lines[1] == "TRITON_INTERPRET=1 pytest tests"


def test_readme_examples_run(tmp_path, monkeypatch, tiny_train, capsys):
    write_pngs(tmp_path / "normal", [f"ok{i:02d}.png" for i in range(12)], 0, size=20)
    write_pngs(tmp_path / "defects", [f"bad{i}.png" for i in range(4)], 1, size=20, spot=True)
    write_pngs(tmp_path / "new", ["part1.png", "part2.png", "part3.png"], 2, size=20)
    write_pngs(tmp_path / "validation", [f"val{i}.png" for i in range(5)], 3, size=20)
    write_pngs(tmp_path / "surfaces", ["s0.png", "s1.png"], 4, size=48, spot=True)
    write_mvtec(tmp_path / "bottle", size=20)
    monkeypatch.chdir(tmp_path)
    ran = {"python": 0, "cli": 0}
    for i, (lang, body) in enumerate(readme_blocks()[1:], start=2):
        where = f"README block #{i} ({lang}) starting {body.splitlines()[0]!r}"
        if lang == "python":
            if body.startswith(FRAGMENTS):  # runs in its own test, after its definitions
                continue
            if not torch.cuda.is_available():
                body = body.replace('device="cuda"', 'device="cpu"')
            try:
                exec(compile(body, f"README.md block #{i}", "exec"), {"__name__": "__main__"})
            except Exception as exc:
                raise AssertionError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
            ran["python"] += 1
        elif lang in ("bash", "sh", "shell"):
            for cmd in shell_commands(body):
                if cmd.startswith(NOT_RUN):
                    continue
                argv = shlex.split(cmd)
                assert argv[0] == "anomgan" and argv[1] in ("train", "detect", "evaluate"), \
                    f"{where}: {cmd!r} is neither an anomgan train/detect/evaluate command nor listed in NOT_RUN"
                rc = main([*argv[1:], "--quiet"])
                assert rc == 0, f"{where}: {cmd!r} exited {rc}: {capsys.readouterr().err}"
                ran["cli"] += 1
        else:
            pytest.fail(f"{where}: unknown block language {lang!r}")
    assert ran["python"] >= 6 and ran["cli"] >= 3, ran
    assert set(tiny_train) == {"noisy-gan", "dual-disc", "ganomaly"}
    for f in ("line3.anomgan", "scores.csv", "report.html", "ganomaly.anomgan"):
        assert os.path.isfile(tmp_path / f), f
    det = anomgan.load(tmp_path / "line3.anomgan")
    assert det.method_name == "noisy-gan" and det.info["anomalous_images"] == 4  # the torchrun script's
