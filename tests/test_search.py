"""anomgan.scoring.search.latent_search and anomgan.scoring.frozen.prepare_frozen on tiny networks.

The oracle is written here independently: the AnoGAN loss with torch's abs and sums, autograd
through the caller's own (unfrozen, eval-mode) networks, and torch.optim.Adam on z.
"""

import pytest
import torch
from torch import nn

from conftest import backend_device_params, skip_unless_backend

from anomgan.scoring.frozen import fold_batchnorm_, is_frozen, prepare_frozen
from anomgan.scoring.search import (ANOGAN_LR_SCHEDULE, SearchResult, latent_loss_and_grad,
                            latent_search, lr_table, plain_search_loop)

Z = 6


class TinyG(nn.Module):
    """z (N, Z) -> (N, 2, 8, 8) in [-1, 1]; BatchNorm after both transposed convolutions."""

    def __init__(self):
        super().__init__()
        self.z_dim = Z
        self.net = nn.Sequential(
            nn.ConvTranspose2d(Z, 12, 4, 1, 0, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
            nn.ConvTranspose2d(12, 6, 4, 2, 1), nn.BatchNorm2d(6), nn.LeakyReLU(0.2),
            nn.Conv2d(6, 2, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return self.net(z[:, :, None, None])


class TinyD(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(2, 5, 3, 2, 1, bias=False), nn.BatchNorm2d(5), nn.LeakyReLU(0.2),
            nn.Conv2d(5, 7, 3, 2, 1), nn.BatchNorm2d(7), nn.LeakyReLU(0.2))
        self.head = nn.Linear(7 * 2 * 2, 1)

    def features(self, x):
        return self.trunk(x)

    def forward(self, x):
        return self.head(self.trunk(x).flatten(1))


def _randomise_bn(module, gen):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)


def _nets(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    g, d = TinyG(), TinyD()
    gen = torch.Generator().manual_seed(seed + 1)
    _randomise_bn(g, gen)
    _randomise_bn(d, gen)
    g, d = g.to(dtype), d.to(dtype)
    g.train(), d.train()  # the caller's networks may be in training mode: the search must not care
    return g, d


def _queries(b, dtype=torch.float64, seed=2):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 2, 8, 8, generator=gen, dtype=dtype) * 1.6 - 0.8)


def _ref_loss(g, d, x, z, lam=0.1):
    """(N,) AnoGAN loss with sums, through the caller's networks in eval mode (float64)."""
    gz = g(z)
    return ((1 - lam) * (x - gz).abs().flatten(1).sum(1)
            + lam * (d.features(x) - d.features(gz)).abs().flatten(1).sum(1))


def _ref_search(g, d, x, z0, lrs, lam=0.1):
    """The plain PyTorch loop: autograd on the loss, torch.optim.Adam on z."""
    g, d = g.eval(), d.eval()
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lrs[0])
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        _ref_loss(g, d, x, z, lam).sum().backward()
        opt.step()
    return z.detach()


# ----------------------------------------------------------------------------- prepare_frozen
def test_prepare_frozen_same_function_and_input_gradient():
    g, d = _nets()
    g_eval = TinyG().double()
    g_eval.load_state_dict(g.state_dict())
    g_eval.eval()
    fg = prepare_frozen(g)
    fd = prepare_frozen(d)
    assert is_frozen(fg) and is_frozen(fd) and not is_frozen(g)
    # the originals are untouched: still training, still trainable, BatchNorm still there
    assert g.training and d.training and all(p.requires_grad for p in g.parameters())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == 2
    # the copies: eval, frozen, BatchNorm folded away
    assert not fg.training and not any(p.requires_grad for p in fg.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fg.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fd.trunk.modules())
    z = torch.randn(5, Z, dtype=torch.float64)
    torch.testing.assert_close(fg(z), g_eval(z), rtol=1e-10, atol=1e-10)
    d.eval()
    x = _queries(5)
    torch.testing.assert_close(fd.features(x), d.features(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fd(x), d(x), rtol=1e-10, atol=1e-10)
    # gradients still reach the input, and equal the original's
    za = z.clone().requires_grad_(True)
    zb = z.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(fd.features(fg(za)).square().sum(), za)
    (gb,) = torch.autograd.grad(d.features(g_eval(zb)).square().sum(), zb)
    torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-10)


def test_prepare_frozen_float32_channels_last_and_unfoldable_bn():
    torch.manual_seed(3)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.BatchNorm2d(4),                        # not after a conv: kept
                      nn.ConvTranspose2d(4, 6, 3, groups=2), nn.BatchNorm2d(6),  # groups: kept
                      nn.Conv2d(6, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))
    _randomise_bn(m, torch.Generator().manual_seed(4))
    f = prepare_frozen(m, channels_last=True)
    assert m.training
    assert [type(x).__name__ for x in f] == ["Conv2d", "Identity", "ReLU", "BatchNorm2d",
                                             "ConvTranspose2d", "BatchNorm2d", "Conv2d",
                                             "BatchNorm2d"]
    assert f[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 5, 7)
    torch.testing.assert_close(f(x), m.eval()(x), rtol=1e-5, atol=1e-5)


def test_fold_and_prepare_reject_bad_input():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm_(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)))
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        prepare_frozen(lambda x: x)
    with pytest.raises(ValueError, match="not a method"):
        prepare_frozen(TinyD(), compile=("no_such_method",))


# ----------------------------------------------------------------------------- the gradient
def test_z_gradient_equals_autograd_on_reference_loss():
    g, d = _nets()
    x = _queries(4)
    z = torch.randn(4, Z, dtype=torch.float64)
    fg, fd = prepare_frozen(g), prepare_frozen(d)
    loss, grad = latent_loss_and_grad(fg, fd.features, x, fd.features(x), z, lam=0.3,
                                      reduction="sum")
    g.eval(), d.eval()
    zr = z.clone().requires_grad_(True)
    ref = _ref_loss(g, d, x, zr, lam=0.3)
    (gref,) = torch.autograd.grad(ref.sum(), zr)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, gref, rtol=1e-9, atol=1e-10)
    # per sample: sample i's gradient is the gradient of its own loss alone
    zi = z[2:3].clone().requires_grad_(True)
    (gi,) = torch.autograd.grad(_ref_loss(g, d, x[2:3], zi, lam=0.3).sum(), zi)
    torch.testing.assert_close(grad[2:3], gi, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend,device", backend_device_params(("torch", "cpp", "triton")))
def test_search_equals_plain_adam_loop_and_keeps_no_parameter_gradients(backend, device):
    skip_unless_backend(backend, device)
    g, d = _nets()
    g, d = g.to(device), d.to(device)
    x = _queries(3).to(device)
    z0 = torch.randn(3, Z, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    z0 = z0.to(device)
    sched = ((0, 0.05), (4, 0.02), (7, 0.01))
    res = latent_search(g, d.features, x, steps=9, lr=sched, z0=z0, backend=backend,
                        reduction="sum")
    assert isinstance(res, SearchResult)
    assert all(p.grad is None for p in list(g.parameters()) + list(d.parameters()))
    assert g.training and d.training  # the caller's networks are left as they were
    zref = _ref_search(g, d, x, z0, lr_table(sched, 9))
    torch.testing.assert_close(res.z, zref, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(res.loss, _ref_loss(g, d, x, zref).detach(), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(res.recon, g(zref).detach(), rtol=1e-8, atol=1e-9)
    assert res.steps_taken.tolist() == [9, 9, 9] and res.restart.tolist() == [0, 0, 0]
    assert res.loss_history is None


def test_the_benchmarks_plain_loop_is_the_reference_search():
    """plain_search_loop (what the benchmarks time latent_search against) is the textbook loop:
    equal to this file's float64 reference at a constant learning rate, and to latent_search."""
    g, d = _nets()
    g, d = g.eval(), d.eval()
    x = _queries(4)
    z0 = torch.randn(4, Z, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    z = plain_search_loop(g, d, x, z0, 6, lam=0.1, lr=0.02)
    torch.testing.assert_close(z, _ref_search(g, d, x, z0, [0.02] * 6), rtol=0, atol=0)
    res = latent_search(g, d.features, x, steps=6, lr=0.02, z0=z0, reduction="sum")
    torch.testing.assert_close(res.z, z, rtol=1e-8, atol=1e-9)
    assert not torch.equal(z, z0)


def test_loss_history_is_the_loss_at_each_iterations_z():
    g, d = _nets()
    x = _queries(3)
    z0 = torch.randn(3, 2, Z, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    res = latent_search(g, d.features, x, steps=4, lr=0.05, z0=z0, restarts=2, record_loss=True,
                        reduction="sum")
    assert res.loss_history.shape == (4, 3)
    g.eval(), d.eval()
    with torch.no_grad():
        first = _ref_loss(g, d, x, z0[torch.arange(3), res.restart])
    torch.testing.assert_close(res.loss_history[0], first, rtol=1e-10, atol=1e-10)
    two = latent_search(g, d.features, x, steps=2, lr=0.05, z0=z0[torch.arange(3), res.restart],
                        reduction="sum")
    torch.testing.assert_close(res.loss_history[2], two.loss, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- behaviour
def test_search_lowers_the_loss_of_every_sample_float32():
    g, d = _nets(torch.float32)
    x = _queries(6, torch.float32)
    z0 = torch.randn(6, Z, generator=torch.Generator().manual_seed(6))
    g.eval(), d.eval()
    with torch.no_grad():
        before = _ref_loss(g, d, x, z0)
    res = latent_search(g, d.features, x, steps=40, lr=0.05, z0=z0, reduction="sum")
    assert res.z.dtype == torch.float32 and res.loss.shape == (6,)
    assert bool((res.loss < before).all()), (before, res.loss)
    with torch.no_grad():
        torch.testing.assert_close(res.loss, _ref_loss(g, d, x, res.z), rtol=1e-4, atol=1e-3)


def test_batched_equals_one_by_one():
    g, d = _nets()
    x = _queries(4)
    z0 = torch.randn(4, Z, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    kw = dict(steps=12, lr=((0, 0.05), (6, 0.01)), lam=0.2)
    res = latent_search(g, d.features, x, z0=z0, **kw)
    for i in range(4):
        one = latent_search(g, d.features, x[i:i + 1], z0=z0[i:i + 1], **kw)
        torch.testing.assert_close(one.z[0], res.z[i], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(one.loss[0], res.loss[i], rtol=1e-9, atol=1e-9)


def test_restarts_keep_the_best_of_separate_runs():
    g, d = _nets()
    x = _queries(3)
    R = 3
    z0 = torch.randn(3, R, Z, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    kw = dict(steps=10, lr=0.05)
    res = latent_search(g, d.features, x, z0=z0, restarts=R, **kw)
    sep = [latent_search(g, d.features, x, z0=z0[:, r], **kw) for r in range(R)]
    losses = torch.stack([s.loss for s in sep], dim=1)  # (B, R)
    best = losses.argmin(dim=1)
    assert res.restart.tolist() == best.tolist()
    assert len(set(best.tolist())) > 1 or losses.std() > 0  # the restarts do differ
    for i in range(3):
        r = int(best[i])
        torch.testing.assert_close(res.z[i], sep[r].z[i], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(res.loss[i], losses[i, r], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(res.recon[i], sep[r].recon[i], rtol=1e-9, atol=1e-10)
    assert bool((res.loss <= losses.min(dim=1).values + 1e-9).all())


def test_warm_start_z0_is_restart_zero_and_others_random():
    g, d = _nets()
    x = _queries(2)
    z0 = torch.randn(2, Z, dtype=torch.float64)
    res = latent_search(g, d.features, x, z0=z0, restarts=2, steps=3, lr=0.05, seed=11)
    starts = torch.randn((2, 2, Z), generator=torch.Generator().manual_seed(11),
                         dtype=torch.float64)
    starts[:, 0] = z0
    ref = latent_search(g, d.features, x, z0=starts, restarts=2, steps=3, lr=0.05)
    assert torch.equal(res.z, ref.z) and torch.equal(res.restart, ref.restart)


def test_seed_makes_the_search_repeatable():
    g, d = _nets(torch.float32)
    x = _queries(3, torch.float32)
    a = latent_search(g, d.features, x, steps=5, lr=0.05, restarts=2, seed=123)
    b = latent_search(g, d.features, x, steps=5, lr=0.05, restarts=2, seed=123)
    c = latent_search(g, d.features, x, steps=5, lr=0.05, restarts=2, seed=124)
    assert torch.equal(a.z, b.z) and torch.equal(a.loss, b.loss) and torch.equal(a.recon, b.recon)
    assert not torch.equal(a.z, c.z)


def test_tol_stops_samples_and_leaves_their_z_unchanged():
    g, d = _nets()
    x = _queries(4)
    x[0] = 4.0  # far outside tanh's range: G saturates, the loss soon stops moving
    z0 = torch.randn(4, Z, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) * 3
    kw = dict(lr=0.05, tol=1e-4, patience=4, z0=z0)
    short = latent_search(g, d.features, x, steps=30, **kw)
    long = latent_search(g, d.features, x, steps=60, **kw)
    taken = short.steps_taken.tolist()
    assert taken[0] == 4 and max(taken) == 30, taken  # the saturated one stops, others run on
    for i, k in enumerate(taken):
        if k < 30:  # stopped: a longer search leaves it where it was
            assert long.steps_taken[i] == k
            assert torch.equal(long.z[i], short.z[i])
            # ... which is where k plain steps take it
            plain = latent_search(g, d.features, x, steps=k, lr=0.05, z0=z0)
            torch.testing.assert_close(short.z[i], plain.z[i], rtol=1e-10, atol=1e-12)
    assert long.steps_taken.max() <= 60


def test_default_schedule_is_anogans():
    t = lr_table(ANOGAN_LR_SCHEDULE, 500)
    assert t[0] == t[199] == 0.01 and t[200] == t[299] == 0.001 and t[300] == t[499] == 0.0005
    assert lr_table(lambda i: 0.1 / (i + 1), 3) == [0.1, 0.05, 0.1 / 3]
    assert lr_table(0.2, 2) == [0.2, 0.2]


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(steps=-1), ValueError, "steps must be an int >= 0"),
    (dict(compute_dtype="bf16"), TypeError, "compute_dtype must be None or one of"),
    (dict(compute_dtype=torch.int32), TypeError, "compute_dtype must be None or one of"),
    (dict(steps=2.5), TypeError, "steps must be an int"),
    (dict(lam=1.5), ValueError, r"lam must be a finite number in \[0.0, 1.0\]"),
    (dict(lam=-0.1), ValueError, r"lam must be a finite number in \[0.0, 1.0\]"),
    (dict(restarts=0), ValueError, "restarts must be an int >= 1"),
    (dict(tol=-1.0), ValueError, "tol must be None or a finite number > 0"),
    (dict(lr=-0.01), ValueError, "learning rate at step 0 must be a finite number > 0"),
    (dict(lr=((1, 0.01),)), ValueError, "must start at step 0"),
    (dict(lr=((0, 0.01), (0, 0.02))), ValueError, "strictly increase"),
    (dict(lr="fast"), TypeError, "lr must be"),
    (dict(z0=torch.zeros(3, Z, dtype=torch.float64)), ValueError, "batch sizes must match"),
    (dict(z0=torch.zeros(2, 2, Z, dtype=torch.float64)), ValueError, "restarts=1"),
    (dict(reduction="max"), ValueError, "reduction"),
    (dict(seed="x"), TypeError, "seed must be None or an int"),
])
def test_bad_arguments(kwargs, exc, match):
    g, d = _nets()
    with pytest.raises(exc, match=match):
        latent_search(g, d.features, _queries(2), **kwargs)


def test_zero_steps_score_the_starts_and_pick_the_best_restart():
    g, d = _nets()
    x = _queries(3)
    z0 = torch.randn(3, 2, Z, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    res = latent_search(g, d.features, x, steps=0, z0=z0, restarts=2, record_loss=True,
                        reduction="sum")
    g.eval(), d.eval()
    with torch.no_grad():
        both = torch.stack([_ref_loss(g, d, x, z0[:, r]) for r in range(2)], dim=1)
    best = both.argmin(dim=1)
    assert res.restart.tolist() == best.tolist() and res.steps_taken.tolist() == [0, 0, 0]
    torch.testing.assert_close(res.z, z0[torch.arange(3), best], rtol=0, atol=0)
    torch.testing.assert_close(res.loss, both.min(dim=1).values, rtol=1e-10, atol=1e-10)
    assert res.loss_history.shape == (0, 3)


def test_bfloat16_compute_searches_in_bf16_and_scores_in_float32(monkeypatch):
    """compute_dtype=bfloat16: G and f run under autocast during the steps (the z found differs
    from the float32 search by rounding only, and still lowers the loss); the returned loss and
    recon are the float32 networks' at that z."""
    g, d = _nets(torch.float32)
    x = _queries(6, torch.float32)
    z0 = torch.randn(6, Z, generator=torch.Generator().manual_seed(6))
    g.eval(), d.eval()
    seen = []
    real = torch.nn.functional.conv2d

    def spy(inp, *a, **k):
        seen.append(inp.dtype)
        return real(inp, *a, **k)

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    res = latent_search(g, d.features, x, steps=30, lr=0.05, z0=z0, reduction="sum",
                        compute_dtype=torch.bfloat16)
    monkeypatch.undo()
    assert torch.bfloat16 in seen and torch.float32 in seen   # search in bf16, score in fp32
    ref = latent_search(g, d.features, x, steps=30, lr=0.05, z0=z0, reduction="sum")
    assert res.z.dtype == res.loss.dtype == torch.float32
    with torch.no_grad():
        before = _ref_loss(g, d, x, z0)
        torch.testing.assert_close(res.loss, _ref_loss(g, d, x, res.z), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(res.recon, g(res.z), rtol=1e-5, atol=1e-5)
    assert bool((res.loss < before).all())
    torch.testing.assert_close(res.loss, ref.loss, rtol=0.05, atol=0.0)
    # the queries' own dtype asks for no autocast at all
    same = latent_search(g, d.features, x, steps=3, lr=0.05, z0=z0, compute_dtype=torch.float32)
    torch.testing.assert_close(same.z, latent_search(g, d.features, x, steps=3, lr=0.05, z0=z0).z,
                               rtol=0, atol=0)


@pytest.mark.parametrize("compute_dtype", [None, torch.bfloat16])
def test_cuda_graph_path_host_logic_gives_the_eager_result(monkeypatch, compute_dtype):
    """The CUDA-graph path's host logic (eager warm-up iterations on a side stream, one captured
    iteration replayed, learning-rate changes between replays, the every-50-steps tol check,
    the loss history), run on the CPU with torch.cuda's stream and graph API replaced by
    stand-ins whose capture records the iteration instead of running it and whose replay runs
    it: the result is the eager search's, element for element."""
    import contextlib

    import anomgan.scoring.search as S

    class Stream:
        def __init__(self, device=None):
            pass

        def wait_stream(self, other):
            pass

    class Graph:
        def __init__(self):
            self.fn = None

        def replay(self):
            self.fn()

    capturing, calls = [], {"capture": 0, "replay": 0}
    real_iteration = S._Search.iteration

    @contextlib.contextmanager
    def graph(g, capture_error_mode=None):
        calls["capture"] += 1
        capturing.append(g)
        yield
        capturing.pop()

    def iteration(self):
        if capturing:  # a capture records the kernels without running them
            def replay(st=self):
                calls["replay"] += 1
                real_iteration(st)
            capturing[-1].fn = replay
            return
        real_iteration(self)

    g, d = _nets(torch.float32)
    x = _queries(4, torch.float32)
    z0 = torch.randn(4, Z, generator=torch.Generator().manual_seed(9))
    runs = [dict(steps=12, lr=((0, 0.05), (6, 0.01))),
            dict(steps=120, lr=0.02, tol=1e-3, patience=3)]
    eager = [latent_search(g, d.features, x, z0=z0, graph=False, record_loss=True,
                           compute_dtype=compute_dtype, **kw) for kw in runs]
    monkeypatch.setattr(S._Search, "iteration", iteration)
    monkeypatch.setattr(S, "_use_cuda_graph", lambda x: True)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    for kw, ref in zip(runs, eager):
        calls.update(capture=0, replay=0)
        res = latent_search(g, d.features, x, z0=z0, record_loss=True,
                            compute_dtype=compute_dtype, **kw)
        assert calls["capture"] == 1 and calls["replay"] > 0
        for name in ("z", "loss", "recon", "steps_taken", "loss_history"):
            torch.testing.assert_close(getattr(res, name), getattr(ref, name), rtol=0, atol=0,
                                       msg=name)
    assert bool((eager[1].steps_taken < 120).any())        # tol stopped some samples early


def test_bad_images():
    g, d = _nets()
    with pytest.raises(ValueError, match="generator's output shape"):
        latent_search(g, d.features, torch.zeros(2, 2, 9, 8, dtype=torch.float64), steps=1)
    with pytest.raises(ValueError, match="generator's output shape"):
        latent_search(g, d.features, torch.zeros(2, 3, 8, 8, dtype=torch.float64), steps=1)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        latent_search(g, d.features, [[0.0]], steps=1)
    with pytest.raises(TypeError, match="x must be a float tensor"):
        latent_search(g, d.features, torch.zeros(2, 2, 8, 8, dtype=torch.int64), steps=1)
    with pytest.raises(ValueError, match="latent size"):
        latent_search(lambda z: z, lambda x: x, torch.zeros(2, 4), steps=1)
    with pytest.raises(TypeError, match="features must be callable"):
        latent_search(g, 3, _queries(2), steps=1)


def test_plain_callables_and_inference_mode():
    g, d = _nets()
    fg, fd = prepare_frozen(g), prepare_frozen(d)
    x = _queries(2)
    z0 = torch.randn(2, Z, dtype=torch.float64)
    a = latent_search(lambda z: fg(z), lambda t: fd.features(t), x, z0=z0, steps=4, lr=0.05)
    with torch.inference_mode():
        b = latent_search(fg, fd.features, x.clone(), z0=z0, steps=4, lr=0.05)
    torch.testing.assert_close(a.z, b.z, rtol=1e-10, atol=1e-12)
    assert not torch.equal(a.z, z0)
