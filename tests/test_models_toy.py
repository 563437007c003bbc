"""Each method, trained briefly on CPU on a toy two-pattern set (horizontal stripes normal,
vertical stripes anomalous), ranks held-out anomalies above held-out normals (AUROC > 0.8)."""
import pytest
import torch

from anomgan.scoring.config import ScoringConfig
from models_helpers import auroc, make, one_thread, stripes  # noqa: F401

# steps per stage, chosen so each run takes a few seconds on one CPU thread
STEPS = {
    "anogan": {"gan": 400, "encoder": 200},
    "noisy-gan": {"gan": 400, "encoder": 200},
    "ganomaly": {"main": 150},
    "dual-disc": {"main": 150},
}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_ranks_anomalies_above_normals(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    train_n, train_a = stripes(256, False, generator=g), stripes(64, True, generator=g)
    test_n, test_a = stripes(64, False, generator=g), stripes(64, True, generator=g)
    extra = {"width": 8, "d_width": 8} if name == "dual-disc" else {}
    m = make(name, **extra)
    for stage in m.stages():
        opt = m.make_optimizers(stage)
        for _ in range(STEPS[name][stage]):
            x = train_n[torch.randint(0, len(train_n), (16,))]
            an = train_a[torch.randint(0, len(train_a), (16,))]
            m.train_step(stage, x, an if m.uses_anomalies != "no" else None, opt)
    scoring = ScoringConfig(search_steps=50)  # the search methods' own score, shortened
    s_n, s_a = m.score(test_n, scoring)[0], m.score(test_a, scoring)[0]
    assert auroc(s_n, s_a) > 0.8
