"""Each method's losses against the paper's formulas, written out independently here on fixed
tensors (float64 arithmetic with math / explicit loops)."""
import math

import pytest
import torch
import torch.nn.functional as F

from anomgan.models import dual_disc, encoder, ganomaly, noisy_gan
from anomgan.scoring.patches import patch_grid
from models_helpers import make, one_thread  # noqa: F401

REAL = [0.5, -1.0, 2.0]
FAKE = [2.0, 0.1, -0.7]
AN = [1.0, -0.3]


def sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def mean(xs):
    return sum(xs) / len(xs)


def t(xs):
    return torch.tensor(xs, dtype=torch.float64)


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.5, 0.1])
def test_noisy_gan_objective_by_hand(gamma):
    v = mean([math.log(sig(r)) for r in REAL]) + mean([math.log(1 - sig(f)) for f in FAKE])
    an = mean([math.log(1 - sig(a)) for a in AN])
    want = gamma * v + (1 - gamma) * an
    got = noisy_gan.noisy_value(t(REAL), t(FAKE), t(AN), gamma)
    assert got.item() == pytest.approx(want, rel=1e-12)
    d = noisy_gan.discriminator_loss(t(REAL), t(FAKE), t(AN), gamma)
    assert d.item() == pytest.approx(-want, rel=1e-12)
    # without an anomaly batch: AnoGAN's game, exactly
    assert noisy_gan.noisy_value(t(REAL), t(FAKE), None, gamma).item() == pytest.approx(v, rel=1e-12)


def test_gamma_one_is_the_anogan_dcgan_loss():
    bce = (F.binary_cross_entropy_with_logits(t(REAL), torch.ones(3, dtype=torch.float64))
           + F.binary_cross_entropy_with_logits(t(FAKE), torch.zeros(3, dtype=torch.float64)))
    d = noisy_gan.discriminator_loss(t(REAL), t(FAKE), t(AN), 1.0)
    torch.testing.assert_close(d, bce)
    g = noisy_gan.generator_loss(t(FAKE))
    assert g.item() == pytest.approx(-mean([math.log(sig(f)) for f in FAKE]), rel=1e-12)
    # stable for extreme logits
    big = noisy_gan.discriminator_loss(t([80.0]), t([-80.0]), t([-90.0]), 0.9)
    assert torch.isfinite(big) and big.item() < 1e-30


def test_noisy_gan_gamma_one_trains_exactly_like_anogan():
    """NoisyGAN(gamma=1) with anomaly batches, NoisyGAN without them and AnoGAN: same losses and
    the same parameters after the same steps from the same seed."""
    results = []
    for name, extra, use_an in [("anogan", {}, False), ("noisy-gan", {"gamma": 1.0}, True),
                                ("noisy-gan", {"gamma": 0.5}, False)]:
        torch.manual_seed(7)
        m = make(name, **extra)
        opt = m.make_optimizers("gan")
        g = torch.Generator().manual_seed(8)
        losses = []
        for _ in range(3):
            x = torch.rand(4, 1, 16, 16, generator=g)
            an = torch.rand(4, 1, 16, 16, generator=g)
            out = m.train_step("gan", x, an if use_an else None, opt)
            losses.append((out["d_loss"], out["g_loss"]))
        results.append((losses, [p.detach().clone() for p in m.parameters()]))
    for other in results[1:]:
        for (d0, g0), (d1, g1) in zip(results[0][0], other[0]):
            assert d0 == pytest.approx(d1, rel=1e-6, abs=1e-7)
            assert g0 == pytest.approx(g1, rel=1e-6, abs=1e-7)
        for a, b in zip(results[0][1], other[1]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_noisy_gan_gamma_changes_training_with_anomalies():
    out = []
    for gamma in (1.0, 0.5):
        torch.manual_seed(9)
        m = make("noisy-gan", gamma=gamma)
        opt = m.make_optimizers("gan")
        x = torch.rand(4, 1, 16, 16)
        out.append(m.train_step("gan", x, torch.rand_like(x), opt)["d_loss"])
    assert out[0] != pytest.approx(out[1])


@pytest.mark.parametrize("gamma, error", [(0.0, ValueError), (1.5, ValueError), (-0.1, ValueError),
                                          (True, TypeError), ("0.9", TypeError)])
def test_noisy_gan_rejects_bad_gamma(gamma, error):
    with pytest.raises(error, match="gamma"):
        make("noisy-gan", gamma=gamma)


def test_encoder_loss_by_hand():
    torch.manual_seed(10)
    enc = torch.nn.Linear(6, 2).double()
    gen = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh()).double()
    w = torch.randn(6, 3, dtype=torch.float64)
    feats = lambda v: v.flatten(1) @ w  # noqa: E731
    x = torch.rand(4, 6, dtype=torch.float64)
    kappa = 0.7
    want = 0.0
    for i in range(4):
        rec = gen(enc(x[i:i + 1]))
        px = sum((x[i] - rec[0]).pow(2).tolist()) / 6
        fx = sum((feats(x[i:i + 1])[0] - feats(rec)[0]).pow(2).tolist()) / 3
        want += (px + kappa * fx) / 4
    got = encoder.encoder_loss(enc, gen, feats, x, kappa)
    assert got.item() == pytest.approx(want, rel=1e-10)
    got.backward()
    assert enc.weight.grad is not None and torch.isfinite(enc.weight.grad).all()


def _patch_oracle(x, y, patch, stride, n):
    """float64 loops: mean of the n largest window means of the channel-mean |x - y|."""
    B, C, H, W = x.shape
    out = []
    for b in range(B):
        e = [[sum(abs(float(x[b, c, i, j]) - float(y[b, c, i, j])) for c in range(C)) / C
              for j in range(W)] for i in range(H)]
        wins = []
        for i0 in range(0, H - patch + 1, stride):
            for j0 in range(0, W - patch + 1, stride):
                wins.append(sum(e[i][j] for i in range(i0, i0 + patch)
                                for j in range(j0, j0 + patch)) / patch ** 2)
        out.append(mean(sorted(wins, reverse=True)[:n]))
    return out


def test_dual_disc_losses_by_hand():
    g = torch.Generator().manual_seed(11)
    x = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64)
    flat_x, flat_y = x.flatten().tolist(), y.flatten().tolist()
    l1 = mean([abs(a - b) for a, b in zip(flat_x, flat_y)])
    assert dual_disc.recon_loss(x, y).item() == pytest.approx(l1, rel=1e-12)
    p = dual_disc.patch_loss(x, y, 8, 4, 3).item()
    assert p == pytest.approx(mean(_patch_oracle(x, y, 8, 4, 3)), rel=1e-10)
    z, zr = x[:, :, :2, :2], y[:, :, :2, :2]
    assert dual_disc.latent_loss(z, zr).item() == pytest.approx(
        mean([abs(a - b) for a, b in zip(z.flatten().tolist(), zr.flatten().tolist())]))
    real, fake = t([0.2, 1.3, 0.9]), t([0.4, -0.2, 0.0])
    assert dual_disc.lsgan_d_loss(real, fake).item() == pytest.approx(
        mean([(r - 1) ** 2 for r in real.tolist()]) + mean([f ** 2 for f in fake.tolist()]))
    assert dual_disc.adv_loss(fake, 1.0).item() == pytest.approx(
        mean([(f - 1) ** 2 for f in fake.tolist()]))
    assert dual_disc.adv_loss(fake, 0.0).item() == pytest.approx(
        mean([f ** 2 for f in fake.tolist()]))
    per = [mean([abs(a - b) for a, b in zip(x[i].flatten().tolist(), y[i].flatten().tolist())])
           for i in range(2)]
    abc = mean([-math.log(1 - math.exp(-e)) for e in per])
    assert dual_disc.abc_loss(x, y).item() == pytest.approx(abc, rel=1e-10)


def test_dual_disc_abc_guard_at_zero_error():
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    loss = dual_disc.abc_loss(x, x.detach().clone(), eps=1e-6)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(-math.log(1 - math.exp(-1e-6)),
                                                                 rel=1e-4)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_dual_disc_train_step_totals_are_the_weighted_sums():
    torch.manual_seed(12)
    m = make("dual-disc")
    opt = m.make_optimizers("main")
    seen = set()
    for _ in range(10):
        x = torch.rand(3, 1, 16, 16)
        out = m.train_step("main", x, torch.rand_like(x), opt)
        if out["anomaly_step"]:
            want = 1.0 * out["g_adv_anomaly"] + 0.5 * out["g_abc"]
        else:
            want = (1.5 * out["g_recon"] + 1.5 * out["g_patch"] + 0.5 * out["g_latent"]
                    + 0.5 * out["g_adv"])
        assert out["g_total"] == pytest.approx(want, rel=1e-5)
        seen.add(out["anomaly_step"])
    assert seen == {0.0, 1.0}


def test_dual_disc_score_is_patch_topn_of_the_reconstruction():
    torch.manual_seed(13)
    m = make("dual-disc")
    x = torch.rand(2, 1, 16, 16)
    scores, maps = m.score(x)
    m.eval()
    with torch.no_grad():
        rec = (m.autoencoder(x * 2 - 1)[0] + 1) / 2
    assert m.patch == (8, 4, 3)
    want = _patch_oracle(x.double(), rec.double(), 8, 4, 3)
    torch.testing.assert_close(scores.double(), torch.tensor(want, dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps, (x - rec).abs().mean(dim=1))


@pytest.mark.parametrize("size, want", [(16, (8, 4, 3)), (32, (16, 8, 3)), (64, (16, 8, 3))])
def test_dual_disc_patch_settings(size, want):
    assert patch_grid(size, size) == want
    assert make("dual-disc", image_size=size).patch == want
    with pytest.raises(ValueError, match="patch"):
        patch_grid(size, size, patch=size * 2)


def test_ganomaly_losses_by_hand():
    g = torch.Generator().manual_seed(14)
    fr, ff = (torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(2))
    x, xh = (torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    z, zh = (torch.randn(3, 6, generator=g, dtype=torch.float64) for _ in range(2))
    sq = lambda a, b: mean([(p - q) ** 2 for p, q in zip(a.flatten().tolist(), b.flatten().tolist())])  # noqa: E731,E501
    ab = lambda a, b: mean([abs(p - q) for p, q in zip(a.flatten().tolist(), b.flatten().tolist())])  # noqa: E731,E501
    tot, adv, con, enc = ganomaly.generator_loss(fr, ff, x, xh, z, zh)
    assert adv.item() == pytest.approx(sq(fr, ff))
    assert con.item() == pytest.approx(ab(x, xh))
    assert enc.item() == pytest.approx(sq(z, zh))
    assert tot.item() == pytest.approx(sq(fr, ff) + 50 * ab(x, xh) + sq(z, zh))
    real, fake = t([0.3, -2.0]), t([1.5, -0.4])
    want = (mean([-math.log(sig(r)) for r in real.tolist()])
            + mean([-math.log(1 - sig(f)) for f in fake.tolist()])) / 2
    assert ganomaly.discriminator_loss(real, fake).item() == pytest.approx(want)
    assert ganomaly.anomaly_score(z, zh).tolist() == pytest.approx(
        [ab(z[i], zh[i]) for i in range(3)])


def test_ganomaly_train_step_and_score_match_formulas():
    torch.manual_seed(15)
    m = make("ganomaly")
    opt = m.make_optimizers("main")
    out = m.train_step("main", torch.rand(4, 1, 16, 16), None, opt)
    assert out["g_total"] == pytest.approx(out["g_adv"] + 50 * out["g_con"] + out["g_enc"],
                                           rel=1e-5)
    x = torch.rand(3, 1, 16, 16)
    scores, _ = m.score(x)
    m.eval()
    with torch.no_grad():
        z = m.encoder(x * 2 - 1)
        z_hat = m.encoder2(m.decoder(z))
    torch.testing.assert_close(scores, (z - z_hat).abs().mean(dim=1))
