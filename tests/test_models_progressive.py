"""Progressive growing: the schedule, the faded networks and a noisy-gan trained 8 -> 16 -> 32."""
import math

import pytest
import torch
import torch.nn.functional as F

from anomgan.models import ProgressiveDiscriminator, ProgressiveGenerator, ProgressiveSchedule
from anomgan.models.progressive import fade_images
from models_helpers import FAST, make, one_thread  # noqa: F401


def test_schedule_8_16_32():
    s = ProgressiveSchedule(8, 32, fade_steps=3, stable_steps=2)
    assert s.resolutions == [8, 16, 32]
    assert s.total_steps == 2 + 2 * (3 + 2)
    got = [s.stage(i) for i in range(s.total_steps + 3)]
    want = ([(8, 1.0)] * 2 + [(16, 0.25), (16, 0.5), (16, 0.75)] + [(16, 1.0)] * 2
            + [(32, 0.25), (32, 0.5), (32, 0.75)] + [(32, 1.0)] * 2 + [(32, 1.0)] * 3)
    assert got == want


def test_schedule_alpha_ramps_monotonically():
    s = ProgressiveSchedule(4, 64, fade_steps=7, stable_steps=1)
    prev_res, prev_alpha = 4, 1.0
    for i in range(s.total_steps):
        res, alpha = s.stage(i)
        assert 0.0 < alpha <= 1.0
        if res == prev_res:
            assert alpha >= prev_alpha
        else:
            assert res == 2 * prev_res and alpha < 0.2
        prev_res, prev_alpha = res, alpha


@pytest.mark.parametrize("kwargs, match", [
    (dict(start_size=6, end_size=32, fade_steps=1, stable_steps=1), "start_size"),
    (dict(start_size=64, end_size=32, fade_steps=1, stable_steps=1), "start_size"),
    (dict(start_size=8, end_size=32, fade_steps=-1, stable_steps=1), "fade_steps"),
])
def test_schedule_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProgressiveSchedule(**kwargs)


def test_networks_shapes_at_every_stage():
    torch.manual_seed(0)
    G = ProgressiveGenerator(8, 32, 3, width=4, max_width=16, start_size=8)
    D = ProgressiveDiscriminator(32, 3, width=4, max_width=16, start_size=8)
    z = torch.randn(2, 8)
    for res in (8, 16, 32):
        for alpha in (0.3, 1.0):
            G.set_stage(res, alpha)
            D.set_stage(res, alpha)
            native = G(z, native=True)
            assert native.shape == (2, 3, res, res)
            assert native.abs().max() <= 1
            full = G(z)
            assert full.shape == (2, 3, 32, 32)
            logits, feats = D.forward_with_features(native)
            assert logits.shape == (2,) and feats.shape == (2, D.feature_dim)
            # the full-size (nearest-upsampled) image pools back to the native one
            torch.testing.assert_close(D(full), logits, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="resolution"):
        G.set_stage(12)
    with pytest.raises(ValueError, match="alpha"):
        D.set_stage(16, 1.5)
    D.set_stage(16)
    with pytest.raises(ValueError, match="S >= 16"):
        D(torch.rand(1, 3, 8, 8))


def test_fade_in_starts_from_the_previous_stage():
    """At alpha -> 0 a new resolution reproduces the previous stage exactly: the earlier stages'
    parameters carry over and the new block enters smoothly."""
    torch.manual_seed(1)
    G = ProgressiveGenerator(8, 32, 1, width=4, max_width=16, start_size=8)
    D = ProgressiveDiscriminator(32, 1, width=4, max_width=16, start_size=8)
    z = torch.randn(3, 8)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    G.set_stage(8, 1.0)
    D.set_stage(8, 1.0)
    prev_img = G(z, native=True)
    prev_logit = D(F.avg_pool2d(x, 2))
    G.set_stage(16, 0.0)
    D.set_stage(16, 0.0)
    torch.testing.assert_close(G(z, native=True),
                               F.interpolate(prev_img, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(D(x), prev_logit, rtol=1e-5, atol=1e-6)


def test_fade_images():
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(fade_images(x, 16, 1.0), F.avg_pool2d(x, 2))
    half = fade_images(x, 16, 0.5)
    lo = F.interpolate(F.avg_pool2d(x, 4), scale_factor=2, mode="nearest")
    torch.testing.assert_close(half, 0.5 * F.avg_pool2d(x, 2) + 0.5 * lo)


def test_noisy_gan_grows_8_16_32_and_keeps_parameters():
    torch.manual_seed(2)
    m = make("noisy-gan", image_size=32, progressive=True, start_size=8, fade_steps=2,
             stable_steps=2)
    opt = m.make_optimizers("gan")
    keys = list(m.state_dict())
    base_before = m.generator.base[0].weight.detach().clone()
    seen = []
    for step in range(m.schedule.total_steps + 1):
        x = torch.rand(4, 1, 32, 32)
        out = m.train_step("gan", x, torch.rand_like(x), opt)
        assert all(math.isfinite(v) for v in out.values()), out
        seen.append((out["resolution"], out["alpha"]))
        res, alpha = m.schedule.stage(step)
        assert out["resolution"] == res and out["alpha"] == pytest.approx(alpha, rel=1e-6)
    assert {r for r, _ in seen} == {8.0, 16.0, 32.0}
    assert list(m.state_dict()) == keys
    # the 4x4 base trained from the first stage on and is still used at 32x32
    assert not torch.equal(base_before, m.generator.base[0].weight)
    assert int(m.gan_step) == m.schedule.total_steps + 1
    # the encoder stage and scoring work at full size
    eopt = m.make_optimizers("encoder")
    out = m.train_step("encoder", torch.rand(4, 1, 32, 32), None, eopt)
    assert math.isfinite(out["encoder_loss"])
    for scores, maps in (m.score(torch.rand(2, 1, 32, 32), FAST),
                         m.encoder_score(torch.rand(2, 1, 32, 32))):
        assert scores.shape == (2,) and maps.shape == (2, 32, 32)
    # resuming from the state_dict continues the schedule
    m2 = type(m)(**m.hparams())
    m2.load_state_dict(m.state_dict())
    assert int(m2.gan_step) == int(m.gan_step)
    assert m2.generator.resolution == 32 and m2.generator.alpha == 1.0
