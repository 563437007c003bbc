"""The Method interface, for every registered method: registry, training, hparams round trip,
scores (shapes, dtypes, batch independence), determinism and bad input."""
import json
import math

import pytest
import torch

from anomgan.models import METHODS, Method, get_method
from anomgan.models.networks import count_params
from models_helpers import FAST, NAMES, TINY, anomalies_for, make, one_thread, train  # noqa: F401


def test_registry_lists_the_four_methods():
    assert set(METHODS) == {"noisy-gan", "anogan", "ganomaly", "dual-disc"}
    for name, cls in METHODS.items():
        assert get_method(name) is cls and cls.name == name and issubclass(cls, Method)
    assert get_method("noisy-gan").uses_anomalies == "optional"
    assert get_method("anogan").uses_anomalies == "no"
    assert get_method("ganomaly").uses_anomalies == "no"
    assert get_method("dual-disc").uses_anomalies == "required"


def test_unknown_method_lists_names():
    with pytest.raises(ValueError, match="known methods.*dual-disc.*ganomaly"):
        get_method("vae")
    with pytest.raises(TypeError):
        get_method(3)


@pytest.mark.parametrize("name", NAMES)
def test_bad_construction(name):
    cls = get_method(name)
    with pytest.raises(ValueError, match="power of two"):
        cls(28, 1)
    with pytest.raises(ValueError, match="power of two"):
        cls(8, 1)
    with pytest.raises(TypeError, match="image_size"):
        cls(32.0, 1)
    with pytest.raises(ValueError, match="channels"):
        cls(32, 2)
    with pytest.raises(ValueError, match="unknown hyper-parameter.*bogus"):
        cls(32, 1, bogus=1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_few_steps_finite_losses(name, channels):
    torch.manual_seed(0)
    m = make(name, channels=channels)
    out = train(m, steps=3, channels=channels)
    assert list(out) == m.stages()
    for losses in out.values():
        assert losses and all(isinstance(v, float) and math.isfinite(v) for v in losses.values())
    assert all(torch.isfinite(p).all() for p in m.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_hparams_round_trip(name):
    torch.manual_seed(1)
    m = make(name, image_size=32, channels=3)
    train(m, steps=1, size=32, channels=3)
    hp = json.loads(json.dumps(m.hparams()))
    assert hp["image_size"] == 32 and hp["channels"] == 3
    m2 = type(m)(**hp)
    sd, sd2 = m.state_dict(), m2.state_dict()
    assert list(sd) == list(sd2)
    for k in sd:
        if isinstance(sd[k], torch.Tensor):
            assert sd[k].shape == sd2[k].shape and sd[k].dtype == sd2[k].dtype, k
    m2.load_state_dict(sd)
    x = torch.rand(3, 3, 32, 32)
    s1, m1 = m.score(x, FAST)
    s2, mm2 = m2.score(x, FAST)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    torch.testing.assert_close(m1, mm2, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_score_shapes_dtypes_and_batch_independence(name):
    torch.manual_seed(2)
    m = make(name)
    train(m, steps=2)
    m.train()
    x = torch.rand(5, 1, 16, 16)
    scores, maps = m.score(x, FAST)
    assert m.training, "score must restore the previous mode"
    assert scores.shape == (5,) and scores.dtype == torch.float32
    assert maps.shape == (5, 16, 16) and maps.dtype == torch.float32
    assert torch.isfinite(scores).all() and (maps >= 0).all() and (maps <= 1).all()
    for i in range(5):
        s_i, m_i = m.score(x[i:i + 1], FAST)
        torch.testing.assert_close(s_i, scores[i:i + 1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m_i, maps[i:i + 1], rtol=1e-5, atol=1e-6)
    # float64 input is accepted and cast to the parameters' dtype
    s64, _ = m.score(x.double(), FAST)
    torch.testing.assert_close(s64, scores)
    m.eval()  # already in eval mode: scored alike, left in eval mode
    s_eval, _ = m.score(x, FAST)
    assert not any(mod.training for mod in m.modules())
    torch.testing.assert_close(s_eval, scores)


@pytest.mark.parametrize("name", NAMES)
def test_training_is_deterministic_given_the_seed(name):
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        m = make(name)
        runs.append((train(m, steps=3), [p.detach().clone() for p in m.parameters()]))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input(name):
    m = make(name)
    stage = m.stages()[0]
    opt = m.make_optimizers(stage)
    x = torch.rand(2, 1, 16, 16)
    an = anomalies_for(m, x)
    with pytest.raises(ValueError, match="stage"):
        m.make_optimizers("nope")
    with pytest.raises(ValueError, match="stage"):
        m.train_step("nope", x, an, opt)
    with pytest.raises(ValueError, match=r"normal.*shape"):
        m.train_step(stage, torch.rand(2, 3, 16, 16), an, opt)
    with pytest.raises(ValueError, match=r"normal.*shape"):
        m.train_step(stage, torch.rand(2, 1, 32, 32), an, opt)
    with pytest.raises(TypeError, match="normal"):
        m.train_step(stage, (x * 255).to(torch.uint8), an, opt)
    with pytest.raises(TypeError, match="normal"):
        m.train_step(stage, x.numpy(), an, opt)
    with pytest.raises(ValueError, match=r"x.*shape"):
        m.score(torch.rand(16, 16))
    if m.uses_anomalies == "required":
        with pytest.raises(ValueError, match="needs anomalous"):
            m.train_step(stage, x, None, opt)
    if m.uses_anomalies == "no":
        with pytest.raises(ValueError, match="does not use anomalous"):
            m.train_step(stage, x, torch.rand_like(x), opt)
    else:
        with pytest.raises(ValueError, match=r"anomalous.*shape"):
            m.train_step(stage, x, torch.rand(2, 1, 8, 8), opt)


@pytest.mark.parametrize("name", ["noisy-gan", "anogan"])
def test_gan_methods_expose_search_parts(name):
    torch.manual_seed(4)
    m = make(name)
    assert m.stages() == ["gan", "encoder"]
    z = torch.randn(3, m.z_dim)
    img = m.generator(z)
    assert img.shape == (3, 1, 16, 16) and img.min() >= -1 and img.max() <= 1
    f = m.discriminator.features(img)
    assert f.shape == (3, m.discriminator.feature_dim)
    assert m.encoder(img).shape == (3, m.z_dim)
    with pytest.raises(RuntimeError, match="encoder"):
        m.encoder_score(torch.rand(1, 1, 16, 16))
    scores, maps = m.score(torch.rand(2, 1, 16, 16), FAST)  # the search needs no encoder
    assert scores.shape == (2,) and maps.shape == (2, 16, 16)


def test_dual_disc_rng_state_is_checkpointed():
    torch.manual_seed(5)
    m = make("dual-disc")
    opt = m.make_optimizers("main")
    x = torch.rand(2, 1, 16, 16)
    sd = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in m.state_dict().items()}
    rng = m.get_rng_state()
    kinds = [m.train_step("main", x, x, opt)["anomaly_step"] for _ in range(12)]
    assert 0.0 < sum(kinds) < 12, "both batch kinds are drawn"
    m2 = make("dual-disc")
    m2.load_state_dict(sd)
    opt2 = m2.make_optimizers("main")
    assert [m2.train_step("main", x, x, opt2)["anomaly_step"] for _ in range(12)] == kinds
    m.set_rng_state(rng)
    assert [m.train_step("main", x, x, opt)["anomaly_step"] for _ in range(12)] == kinds
    with pytest.raises(ValueError, match="batch_choice"):
        m.set_rng_state({"other": rng["batch_choice"]})


@pytest.mark.parametrize("p, want", [(0.0, 0.0), (1.0, 1.0)])
def test_dual_disc_p_anomaly_extremes(p, want):
    m = make("dual-disc", p_anomaly=p)
    opt = m.make_optimizers("main")
    x = torch.rand(2, 1, 16, 16)
    assert {m.train_step("main", x, x, opt)["anomaly_step"] for _ in range(4)} == {want}


@pytest.mark.parametrize("norm", ["none", "group", "batch"])
def test_dual_disc_generator_norm(norm):
    """g_norm: "none" (default) and "group" have no BatchNorm in the autoencoder, so training
    mode and eval mode reconstruct alike and a training step's statistics never leak into
    scores; "batch" (the paper) keeps BatchNorm."""
    torch.manual_seed(0)
    m = make("dual-disc", g_norm=norm)
    assert m.hp["g_norm"] == norm
    bn = [b for b in m.autoencoder.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert bool(bn) == (norm == "batch")
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    m.autoencoder.train()
    train_out = m.autoencoder(x)[0]
    m.autoencoder.eval()
    eval_out = m.autoencoder(x)[0]
    assert torch.allclose(train_out, eval_out) == (norm != "batch")
    with pytest.raises(ValueError, match="g_norm"):
        make("dual-disc", g_norm="layer")


def test_dual_disc_sizes_follow_the_paper():
    # Kim et al. 2020: generator 97.75K parameters at 32x32x3 (0.38K + 2.08K + 8.26K + 32.9K +
    # 32.83K + 16.42K + 4.11K + 0.77K); "98K" in the text
    m = get_method("dual-disc")(32, 3, g_norm="batch")
    assert abs(count_params(m.autoencoder) - 97_750) < 0.01 * 97_750
    for size in (16, 32, 64):
        d = get_method("dual-disc")(size, 1)
        out = d.disc_normal(torch.zeros(1, 1, size, size))
        assert out.shape[:2] == (1, 1) and out.shape[-1] >= 2
        x_hat, z = d.autoencoder(torch.zeros(1, 1, size, size))
        assert x_hat.shape == (1, 1, size, size) and z.shape[-1] == 2
