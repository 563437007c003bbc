"""The HTML report: self-contained, sorted, and really rendered by a browser."""
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from anomgan.apps.report import histogram_svg, overlay, render_report, write_report
from anomgan.scoring.result import DetectionResult


def _result(n=5, size=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=gen) * 0.3 + 0.3
    maps = torch.rand(n, size, size, generator=gen) * 0.05
    maps[2, 10:14, 20:30] = 0.9  # one clear defect
    scores = maps.flatten(1).max(1).values
    res = DetectionResult(scores=scores, maps=maps, labels=scores > 0.5, threshold=0.5,
                          names=[f"part_{i}.png" for i in range(n)])
    return images, res


def test_report_is_self_contained_and_sorted(tmp_path):
    images, res = _result()
    path = tmp_path / "r.html"
    write_report(path, images, res, {"method": "noisy-gan", "gamma": 0.9})
    text = path.read_text()
    srcs = re.findall(r'<img class="overlay" src="([^"]+)"', text)
    assert len(srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in text and "https://" not in text  # nothing fetched from outside
    names = re.findall(r'<div class="name">([^<]+)</div>', text)
    assert names[0] == "part_2.png"  # the defective image comes first
    want = [f"part_{i}.png" for i in torch.argsort(res.scores, descending=True).tolist()]
    assert names == want
    assert "noisy-gan" in text and 'class="threshold"' in text and "1</b> above the threshold" in text


def test_overlay_marks_the_defect():
    images, res = _result()
    rgb = overlay(images[2], res.maps[2], vmax=0.9)
    assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
    inside = rgb[10:14, 20:30].astype(float)
    outside = rgb[30:, :10].astype(float)
    # the defect is painted (yellow-ish: strong red+green), the background stays gray
    assert inside[..., 1].mean() > outside[..., 1].mean() + 40
    assert np.abs(outside[..., 0] - outside[..., 2]).mean() < 25


def test_histogram_handles_degenerate_scores():
    assert "no finite scores" in histogram_svg([float("nan")], None)
    svg = histogram_svg([1.0, 1.0, 1.0], 1.0)
    assert svg.count("<rect") == 30 and 'class="threshold"' in svg


def test_report_rejects_mismatched_lengths():
    images, res = _result()
    with pytest.raises(ValueError, match="got 4 images for 5 results"):
        render_report(images[:4], res)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_renders_in_a_real_browser(tmp_path):
    images, res = _result(n=7, size=64)
    path = tmp_path / "report.html"
    write_report(path, images, res, {"method": "dual-disc"})
    prof = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={prof}", "--virtual-time-budget=5000",
                          "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-images-loaded="(\d+)"', dom.stdout)
    assert m, "the page's load handler did not run"
    assert int(m.group(1)) == 7  # every inlined image decoded
    shot = tmp_path / "shot.png"
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={prof}", "--window-size=1200,900",
                          f"--screenshot={shot}", path.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    from PIL import Image

    px = np.asarray(Image.open(shot).convert("RGB"))
    assert px.shape[0] >= 800 and len(np.unique(px.reshape(-1, 3), axis=0)) > 50  # not a blank page


def test_large_images_get_a_close_up_of_the_hottest_spot():
    from anomgan.apps.report import ZOOM, hottest_crop

    images = torch.full((2, 1, 600, 600), 0.4)
    maps = torch.zeros(2, 600, 600)
    maps[1, 500:504, 40:44] = 1.0
    res = DetectionResult(scores=torch.tensor([0.0, 1.0]), maps=maps,
                          labels=torch.tensor([False, True]), threshold=0.5)
    text = render_report(images, res)
    assert text.count('<img class="zoom"') == 2 and text.count('<img class="overlay"') == 2
    (y0, x0), crop = hottest_crop(np.zeros((600, 600, 3), np.uint8), maps[1], ZOOM)
    assert crop.shape == (ZOOM, ZOOM, 3) and y0 <= 500 < y0 + ZOOM and x0 <= 40 < x0 + ZOOM
    small = render_report(*_result()[:1], _result()[1])
    assert '<img class="zoom"' not in small
