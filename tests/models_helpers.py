"""Shared bits of the model tests: tiny configurations, a toy two-pattern data set, AUROC, and
a one-thread fixture (the tiny networks run many times faster single-threaded on a busy CPU)."""
import pytest
import torch

from anomgan.models import get_method
from anomgan.scoring.config import ScoringConfig

# a few latent-search steps: the search methods' score path, at test speed
FAST = ScoringConfig(search_steps=3)

# tiny widths so every method trains in milliseconds per step
TINY = {
    "noisy-gan": {"z_dim": 8, "width": 8, "max_width": 16},
    "anogan": {"z_dim": 8, "width": 8, "max_width": 16},
    "ganomaly": {"z_dim": 8, "width": 8, "max_width": 16},
    "dual-disc": {"width": 4, "d_width": 4, "max_width": 16},
}
NAMES = sorted(TINY)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def no_training(monkeypatch):
    """anomgan.training.fit raises: whatever the test calls must refuse before training."""
    import anomgan.training as training

    def no_fit(*a, **k):
        raise AssertionError("trained before the settings were checked")

    monkeypatch.setattr(training, "fit", no_fit)


def make(name, image_size=16, channels=1, **extra):
    return get_method(name)(image_size, channels, **{**TINY[name], **extra})


def anomalies_for(method, batch):
    """An anomaly batch when the method takes one, else None."""
    if method.uses_anomalies == "no":
        return None
    return torch.rand_like(batch)


def train(method, steps, batch=4, size=16, channels=1):
    """Run ``steps`` train steps of every stage on random images; the last losses per stage."""
    out = {}
    for stage in method.stages():
        opt = method.make_optimizers(stage)
        for _ in range(steps):
            x = torch.rand(batch, channels, size, size)
            out[stage] = method.train_step(stage, x, anomalies_for(method, x), opt)
    return out


def stripes(n, vertical, size=16, generator=None):
    """(n, 1, size, size) images in [0, 1]: sinusoidal stripes of random phase and frequency,
    horizontal (the normal class) or vertical (the anomaly class), with a little noise."""
    g = generator
    phase = torch.rand(n, 1, 1, generator=g) * 6.2832
    freq = 0.6 + 0.3 * torch.rand(n, 1, 1, generator=g)
    ramp = torch.arange(size, dtype=torch.float32)
    grid = ramp.view(1, 1, size) if vertical else ramp.view(1, size, 1)
    img = 0.5 + 0.4 * torch.sin(freq * grid.expand(n, size, size) + phase)
    img = img + 0.03 * torch.randn(n, size, size, generator=g)
    return img.clamp(0, 1).unsqueeze(1)


def auroc(neg, pos):
    """Probability that a positive scores above a negative (ties count one half)."""
    neg, pos = neg.double().view(-1, 1), pos.double().view(1, -1)
    return float(((pos > neg).double() + 0.5 * (pos == neg).double()).mean())


def assert_file_keeps(det, path, part: str, probe, scores) -> None:
    """``det`` saved to ``path`` and loaded back keeps its ``part`` ("head" or "features": the
    same config and fusion statistics) and scores ``probe`` exactly as ``scores``."""
    import anomgan

    det.save(path)
    back = anomgan.load(path)
    got, want = getattr(back, part), getattr(det, part)
    assert got is not None and got.fusion == want.fusion and got.config == want.config
    assert torch.equal(back.detect(probe).scores, scores)
