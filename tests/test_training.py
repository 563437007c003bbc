"""anomgan.training.fit: determinism, bit-exact resume, NaN stop, budgets, logging, multi-process."""
import dataclasses
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from anomgan.models import Method, get_method
from anomgan.training import (CHECKPOINT_NAME, NonFiniteLossError, TrainingInterrupted, fit, load_checkpoint,
                               stage_budgets)
from anomgan.training.config import RESUME_KEYS, FitConfig, check_resumable
from anomgan.training.log import _JsonlLog
from models_helpers import one_thread  # noqa: F401  (tiny convolutions: one thread is faster)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_GAN = dict(width=8, max_width=16, z_dim=4)


def _data(n, seed, c=1, s=16):
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed))


def _states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if isinstance(sa[k], torch.Tensor):
            assert torch.equal(sa[k], sb[k]), k
        else:
            assert repr(sa[k]) == repr(sb[k]), k


def _noisy_run(tmp, **kw):
    args = dict(steps=7, stage_steps={"gan": 4}, batch_size=4, anomaly_batch_size=2, seed=11, progress=False,
                augment={"hflip": True, "rot90": True, "pad_crop": 1}, kmeans_clusters=2, **TINY_GAN)
    args.update(kw)
    return fit(_data(10, 0), _data(5, 1), "noisy-gan", **args)


def test_same_seed_same_losses_and_weights(tmp_path):
    a = _noisy_run(tmp_path)
    b = _noisy_run(tmp_path)
    assert [h["stage"] for h in a.history] == ["gan"] * 4 + ["encoder"] * 3
    assert a.history == b.history
    _states_equal(a.method, b.method)
    c = _noisy_run(tmp_path, seed=12)
    assert c.history != a.history


def _stop_noisy_gan_at_step(monkeypatch, n):
    """Make the n-th noisy-gan train_step from now raise KeyboardInterrupt (before it runs);
    returns a function that restores the real train_step."""
    cls = get_method("noisy-gan")
    real_step = cls.train_step
    calls = {"n": 0}

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(cls, "train_step", interrupted)
    return lambda: monkeypatch.setattr(cls, "train_step", real_step)


@pytest.mark.parametrize("stop_at", [5, 6], ids=["mid-stage", "at-stage-end"])
def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch, stop_at):
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full = _noisy_run(tmp_path, steps=9, stage_steps={"gan": 5}, checkpoint_dir=full_dir, checkpoint_every=3,
                      log_path=full_dir / "log.jsonl")
    restore = _stop_noisy_gan_at_step(monkeypatch, stop_at)
    with pytest.raises(KeyboardInterrupt):
        _noisy_run(tmp_path, steps=9, stage_steps={"gan": 5}, checkpoint_dir=cut_dir, checkpoint_every=3,
                   log_path=cut_dir / "log.jsonl")
    restore()
    state, _ = load_checkpoint(cut_dir)
    saved = {5: 3, 6: 5}[stop_at]           # checkpoints at steps 3, 5 (end of "gan"), 6, 9
    assert state["step"] == saved
    resumed = _noisy_run(tmp_path, steps=9, stage_steps={"gan": 5}, checkpoint_dir=cut_dir, checkpoint_every=3,
                         log_path=cut_dir / "log.jsonl", resume=cut_dir)
    assert resumed.history == full.history[saved:]          # bit-exact losses
    _states_equal(resumed.method, full.method)
    steps_logged = [json.loads(line)["step"] for line in open(cut_dir / "log.jsonl")]
    assert steps_logged == list(range(1, 10))
    with pytest.warns(UserWarning, match="images differ"):
        fit(_data(10, 9), _data(5, 1), "noisy-gan", steps=9, stage_steps={"gan": 5}, batch_size=4, anomaly_batch_size=2,
            seed=11, progress=False, augment={"hflip": True, "rot90": True, "pad_crop": 1}, kmeans_clusters=2,
            resume=cut_dir, **TINY_GAN)
    with pytest.raises(ValueError, match="z_dim|hparams"):
        _noisy_run(tmp_path, steps=9, stage_steps={"gan": 5}, resume=cut_dir, z_dim=5)


def test_sigint_finishes_the_step_checkpoints_and_resumes_exactly(tmp_path, monkeypatch):
    """Ctrl-C (SIGINT to this process) inside step 3: the step completes, a checkpoint of step 3
    is written, fit raises KeyboardInterrupt naming it, and resuming matches an uninterrupted run."""
    full = _noisy_run(tmp_path)
    cls = get_method("noisy-gan")
    real_step = cls.train_step
    calls = {"n": 0}

    def ctrl_c_at_3(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, *a, **k)

    monkeypatch.setattr(cls, "train_step", ctrl_c_at_3)
    handler = signal.getsignal(signal.SIGINT)
    ckpt = tmp_path / "cut" / CHECKPOINT_NAME
    with pytest.raises(TrainingInterrupted, match=f"after step 3; resume from {ckpt}") as ei:
        _noisy_run(tmp_path, checkpoint_dir=tmp_path / "cut", checkpoint_every=100)
    assert isinstance(ei.value, KeyboardInterrupt) and (ei.value.step, ei.value.checkpoint) == (3, str(ckpt))
    assert calls["n"] == 3 and signal.getsignal(signal.SIGINT) is handler  # handler restored
    monkeypatch.setattr(cls, "train_step", real_step)
    state, _ = load_checkpoint(ckpt)
    assert (state["step"], state["stage"], state["stage_step"]) == (3, "gan", 3)
    resumed = _noisy_run(tmp_path, checkpoint_dir=tmp_path / "cut", resume=ckpt)
    assert resumed.history == full.history[3:]
    _states_equal(resumed.method, full.method)


def test_lr_step_decay_follows_the_schedule_and_resumes_exactly(tmp_path, monkeypatch):
    """lr = lr_0 * 0.5 ** (k // 2) at step k of each stage (logged per step); a run stopped
    after step 3 and resumed from its checkpoint continues the schedule bit-exactly."""
    kw = dict(lr_decay_every=2, lr_decay_factor=0.5)
    full = _noisy_run(tmp_path, log_path=tmp_path / "full.jsonl", **kw)
    lines = [json.loads(line) for line in open(tmp_path / "full.jsonl")]
    lr0 = get_method("noisy-gan").DEFAULTS["lr"]
    stage_k = [0, 1, 2, 3, 0, 1, 2]                 # gan: 4 steps, encoder: 3 steps
    assert len(lines) == len(stage_k)
    for line, k in zip(lines, stage_k):
        for name, lr in line["lr"].items():
            assert lr == pytest.approx(lr0 * 0.5 ** (k // 2)), (line["step"], name)
    const = _noisy_run(tmp_path)
    assert const.history[:2] == full.history[:2]    # same lr for steps 1-2 ...
    assert const.history[2:] != full.history[2:]    # ... then the decay changes training

    restore = _stop_noisy_gan_at_step(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        _noisy_run(tmp_path, checkpoint_dir=tmp_path / "cut", checkpoint_every=3, **kw)
    restore()
    resumed = _noisy_run(tmp_path, checkpoint_dir=tmp_path / "cut", resume=tmp_path / "cut", **kw)
    assert resumed.history == full.history[3:]
    _states_equal(resumed.method, full.method)
    with pytest.raises(ValueError, match="lr_decay"):
        _noisy_run(tmp_path, resume=tmp_path / "cut", lr_decay_every=3)
    with pytest.raises(ValueError, match="lr_decay_every"):
        _noisy_run(tmp_path, lr_decay_every=0)
    with pytest.raises(ValueError, match="lr_decay_factor"):
        _noisy_run(tmp_path, lr_decay_every=2, lr_decay_factor=1.5)


class _Exploding(Method):
    """Test-only method: a linear map whose loss turns NaN at a chosen step (loop mechanics)."""
    name = "test-exploding"
    uses_anomalies = "no"
    DEFAULTS = {"nan_at": 3}

    def __init__(self, image_size, channels, **hp):
        super().__init__(image_size, channels, **hp)
        self.lin = torch.nn.Linear(channels * image_size * image_size, 1)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def make_optimizers(self, stage):
        return {"lin": torch.optim.SGD(self.lin.parameters(), lr=0.1)}

    def train_step(self, stage, normal, anomalous, optimizers):
        self.steps += 1
        loss = self.lin(normal.flatten(1)).pow(2).mean()
        if int(self.steps) == self.hp["nan_at"]:
            loss = loss * float("nan")
        optimizers["lin"].zero_grad()
        loss.backward()
        optimizers["lin"].step()
        return {"mse": loss.item()}


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"'mse' is nan at step 5 \(stage 'main'\)") as ei:
        fit(_data(6, 2), None, _Exploding, steps=10, batch_size=2, checkpoint_dir=tmp_path, checkpoint_every=2,
            progress=False, nan_at=5)
    assert ei.value.step == 5 and ei.value.checkpoint == str(tmp_path / CHECKPOINT_NAME)
    state, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state["step"] == 4 and int(state["method"]["steps"]) == 4
    assert torch.isfinite(state["method"]["lin.weight"]).all()
    assert meta["config"]["method"] == "test-exploding"


def test_stage_budgets():
    assert stage_budgets(["gan", "encoder"], 10, None, 3, None) == {"gan": 5, "encoder": 5}
    assert stage_budgets(["gan", "encoder"], 11, None, 3, None) == {"gan": 6, "encoder": 5}
    assert stage_budgets(["gan", "encoder"], 10, None, 3, {"encoder": 2}) == {"gan": 8, "encoder": 2}
    assert stage_budgets(["gan", "encoder"], None, 2, 3, None) == {"gan": 6, "encoder": 6}
    assert stage_budgets(["main"], None, None, 3, {"main": 4}) == {"main": 4}
    with pytest.raises(ValueError, match="unknown stage"):
        stage_budgets(["main"], 5, None, 3, {"gan": 1})
    with pytest.raises(ValueError, match="not both"):
        stage_budgets(["main"], 5, 1, 3, None)
    with pytest.raises(ValueError, match="cannot cover"):
        stage_budgets(["gan", "encoder"], 3, None, 3, {"gan": 3})
    with pytest.raises(ValueError, match="steps or epochs"):
        stage_budgets(["main"], None, None, 3, None)


def test_fit_epochs_logging_and_argument_checks(tmp_path):
    log = tmp_path / "log.jsonl"
    res = fit(_data(6, 3), None, "ganomaly", epochs=2, batch_size=4, progress=True, log_path=log, log_every=2,
              **TINY_GAN)
    assert [h["step"] for h in res.history] == [1, 2, 3, 4]          # 2 epochs x ceil(6 / 4) steps
    lines = [json.loads(x) for x in open(log)]
    assert [x["step"] for x in lines] == [2, 4]
    assert set(lines[0]["lr"]) == {"generator", "discriminator"} and lines[0]["losses"] == res.history[1]["losses"]
    assert res.last_checkpoint is None and not res.method.training
    with pytest.raises(ValueError, match="does not use anomalous"):
        fit(_data(4, 0), _data(2, 1), "ganomaly", steps=1, batch_size=2, progress=False, **TINY_GAN)
    with pytest.raises(ValueError, match="needs anomalous"):
        fit(_data(4, 0), None, "dual-disc", steps=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="image_size"):
        fit(torch.rand(4, 1, 16, 20), None, "ganomaly", steps=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        fit(_data(4, 0), None, "ganomaly", steps=1, batch_size=0, progress=False)
    with pytest.warns(UserWarning, match="amp"):
        fit(_data(4, 0), None, "ganomaly", steps=1, batch_size=2, progress=False, amp=True, **TINY_GAN)


def test_dual_disc_with_labelled_anomalies_and_resize(tmp_path):
    """Images of another size and uint8 dtype are converted; k-means per anomaly class."""
    normal = (torch.rand(6, 20, 20) * 255).to(torch.uint8)
    anomalous = (torch.rand(6, 20, 20) * 255).to(torch.uint8)
    res = fit(normal, anomalous, "dual-disc", anomaly_labels=torch.tensor([0, 0, 0, 1, 1, 1]), image_size=16,
              steps=4, batch_size=2, seed=3, progress=False, checkpoint_dir=tmp_path, kmeans_clusters=2)
    assert len(res.history) == 4 and res.method.image_size == 16
    state, _ = load_checkpoint(tmp_path)
    assert state["samplers"]["anomalous"]["kind"] == "kmeans" and state["samplers"]["anomalous"]["clusters"].shape == (6,)


def test_compile_keeps_losses_and_state_keys():
    a = fit(_data(6, 4), None, "ganomaly", steps=2, batch_size=2, progress=False, **TINY_GAN)
    b = fit(_data(6, 4), None, "ganomaly", steps=2, batch_size=2, progress=False, compile="eager", **TINY_GAN)
    assert a.history == b.history
    assert a.method.state_dict().keys() == b.method.state_dict().keys()


def test_two_process_gloo_equals_single_process(tmp_path):
    """torchrun with 2 CPU processes (gloo), each on half of every global batch of 4, against
    one process on the whole batch. GANomaly with norm="none": no BatchNorm (whose per-shard
    batch statistics would differ) and no random noise, so the only difference is float
    rounding of the gradient average."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           os.path.join(ROOT, "tests", "_ddp_fit.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    normal = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(123))
    single = fit(normal, None, "ganomaly", steps=3, batch_size=4, seed=5, progress=False, width=8, max_width=16,
                 z_dim=4, norm="none")
    ref = single.method.state_dict()
    assert r0.keys() == r1.keys() and len(r0) > 0
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ on {k}"
        torch.testing.assert_close(r0[k], ref[k], rtol=1e-4, atol=1e-5, msg=f"{k}: 2 processes vs 1")
    # each rank trained on its own half of the batch, and the halves' mean losses average to
    # the whole batch's (every GANomaly loss is a mean over the batch)
    l0, l1 = load_file(tmp_path / "losses0.safetensors")["losses"], load_file(tmp_path / "losses1.safetensors")["losses"]
    assert not torch.equal(l0, l1)
    ls = torch.tensor([[v for _, v in sorted(h["losses"].items())] for h in single.history], dtype=torch.float64)
    torch.testing.assert_close((l0 + l1) / 2, ls, rtol=1e-4, atol=1e-6)
    init = fit(normal, None, "ganomaly", steps=1, batch_size=4, seed=5, progress=False, width=8, max_width=16,
               z_dim=4, norm="none", stage_steps={"main": 0})
    changed = [k for k in r0 if not torch.equal(r0[k], init.method.state_dict()[k])]
    assert changed, "training did not move the weights"
    n0, n1 = load_file(tmp_path / "noisy0.safetensors"), load_file(tmp_path / "noisy1.safetensors")
    assert n0.keys() == n1.keys() and all(torch.equal(n0[k], n1[k]) for k in n0), "noisy-gan ranks diverged"
    # only rank 0 wrote the log: one line per step
    assert [json.loads(x)["step"] for x in open(tmp_path / "log.jsonl")] == [1, 2, 3]
    state, _ = load_checkpoint(tmp_path / "ckpt")
    assert state["step"] == 3 and state["samplers"]["normal"]["consumed"] == 12


def test_a_dual_disc_checkpoint_from_before_g_norm_resumes_with_batchnorm(tmp_path):
    """A checkpoint whose config predates g_norm (BatchNorm generator, no g_norm key) resumes
    with g_norm="batch"; with the new default the resume check refuses it, naming hparams."""
    from anomgan.fileio import load_bundle, save_bundle
    from anomgan.training.loop import CHECKPOINT_FORMAT, CHECKPOINT_KIND

    kw = dict(batch_size=4, seed=3, progress=False, width=4, d_width=4, max_width=16)
    fit(_data(8, 0), _data(4, 1), "dual-disc", steps=2, checkpoint_dir=tmp_path, g_norm="batch", **kw)
    path = tmp_path / CHECKPOINT_NAME
    tensors, meta, _ = load_bundle(path, kind=CHECKPOINT_KIND, max_format_version=CHECKPOINT_FORMAT)
    cfg = meta["config"]
    cfg["hparams"] = {k: v for k, v in cfg["hparams"].items() if k != "g_norm"}
    save_bundle(path, tensors, meta, kind=CHECKPOINT_KIND, format_version=CHECKPOINT_FORMAT)
    res = fit(_data(8, 0), _data(4, 1), "dual-disc", steps=3, resume=path, g_norm="batch", **kw)
    assert len(res.history) == 1 and res.method.hp["g_norm"] == "batch"
    with pytest.raises(ValueError, match="hparams"):
        fit(_data(8, 0), _data(4, 1), "dual-disc", steps=3, resume=path, **kw)


@pytest.mark.parametrize("method", ["noisy-gan", "dual-disc"])
def test_evaluation_during_training_sees_eval_mode_and_leaves_training_unchanged(tmp_path, capsys, method):
    """evaluate(method, step) scores held-out images with a Detector (a latent search for
    noisy-gan: gradients through the generator) at the chosen steps; the losses and weights
    equal those of a run without it, and the results reach FitResult, the log and the bar."""
    from anomgan import Detector, ScoringConfig

    held_out = _data(3, 5)
    seen = []

    def evaluate(m, step):
        assert not any(mod.training for mod in m.modules())
        seen.append(step)
        torch.rand(5)  # consumes the global RNG: must not shift the training run
        scores, _ = Detector(m, scoring=ScoringConfig(search_steps=2)).score_tensor(held_out)
        return {"mean_score": float(scores.mean()), "n": 3}

    if method == "noisy-gan":
        run = lambda **kw: _noisy_run(tmp_path, **kw)  # noqa: E731
    else:
        run = lambda **kw: fit(_data(8, 0), _data(6, 1), "dual-disc", **{  # noqa: E731
            **dict(steps=6, batch_size=2, seed=4, progress=False, kmeans_clusters=2, width=4, d_width=4), **kw})
    plain = run()
    log = tmp_path / "log.jsonl"
    ev = run(evaluate=evaluate, evaluate_at=[2, 5, 99], evaluate_every=3, log_path=log, progress=True)
    assert seen == [2, 3, 5, 6]
    assert [e["step"] for e in ev.evaluations] == seen and all(e["n"] == 3.0 for e in ev.evaluations)
    assert all(torch.isfinite(torch.tensor(e["mean_score"])) for e in ev.evaluations)
    assert ev.history == plain.history
    _states_equal(ev.method, plain.method)
    lines = [json.loads(x) for x in open(log)]
    assert [x["step"] for x in lines if "eval" in x] == seen
    assert [x["eval"]["mean_score"] for x in lines if "eval" in x] == [e["mean_score"] for e in ev.evaluations]
    assert "step 5: mean_score=" in capsys.readouterr().out
    quiet = run(evaluate=evaluate, evaluate_every=6)
    assert [e["step"] for e in quiet.evaluations] == [6] and "mean_score" not in capsys.readouterr().out


def test_evaluation_argument_checks():
    kw = dict(steps=1, batch_size=2, progress=False, **TINY_GAN)
    x = _data(4, 0)
    with pytest.raises(ValueError, match="without evaluate"):
        fit(x, None, "ganomaly", evaluate_every=1, **kw)
    with pytest.raises(TypeError, match="evaluate must be a callable"):
        fit(x, None, "ganomaly", evaluate="auroc", evaluate_every=1, **kw)
    with pytest.raises(ValueError, match="evaluate_every"):
        fit(x, None, "ganomaly", evaluate=lambda m, s: {}, evaluate_every=0, **kw)
    with pytest.raises(ValueError, match="evaluate_at"):
        fit(x, None, "ganomaly", evaluate=lambda m, s: {}, evaluate_at=[0], **kw)
    with pytest.raises(TypeError, match="dict of numbers"):
        fit(x, None, "ganomaly", evaluate=lambda m, s: 0.5, evaluate_every=1, **kw)
    with pytest.raises(TypeError, match="numbers"):
        fit(x, None, "ganomaly", evaluate=lambda m, s: {"auroc": "high"}, evaluate_every=1, **kw)
    with pytest.raises(ValueError, match="reserved"):
        fit(x, None, "ganomaly", evaluate=lambda m, s: {"step": 1}, evaluate_every=1, **kw)


def test_an_evaluation_keeps_the_gradients_and_modes_it_found():
    """A method whose train step accumulates gradients across steps must not see the
    evaluation's backward passes (e.g. a latent search) in them."""
    from anomgan.training.loop import _run_evaluation

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5))
    net.train()
    net[0].weight.grad = torch.ones(2, 3)

    def evaluate(m, step):
        m(torch.ones(1, 3)).sum().backward()
        return {"loss": 1}

    assert _run_evaluation(evaluate, net, 7, "main") == {"step": 7, "stage": "main", "loss": 1.0}
    assert torch.equal(net[0].weight.grad, torch.ones(2, 3)) and net[0].bias.grad is None
    assert net.training and net[1].training


# ---- the pieces: FitConfig, the checkpoint's config, the JSONL log, TrainingInterrupted ----------
def test_fit_config_validates_and_normalises_every_argument(tmp_path):
    cfg = FitConfig(steps=5, batch_size=8, augment={"hflip": True}, checkpoint_dir=tmp_path, evaluate=lambda m, s: {},
                    evaluate_at=[3, 3, 1], lr_decay_every=2, lr_decay_factor=1, hparams={"width": 4})
    assert cfg.anomaly_batch_size == 8 and cfg.checkpoint_dir == str(tmp_path) and cfg.resume is None
    assert cfg.evaluate_at == frozenset({1, 3}) and cfg.lr_decay_factor == 1.0 and cfg.augment.hflip
    assert cfg.device == torch.device("cpu") and not cfg.uses_amp and cfg.autocast_dtype == torch.bfloat16
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 6
    bad_type = [("steps", 2.0), ("batch_size", "8"), ("checkpoint_every", True), ("log_every", None), ("seed", 0.5),
                ("anomaly_batch_size", 2.5), ("lr_decay_every", "2"), ("lr_decay_factor", "0.5"),
                ("kmeans_clusters", 1.0), ("epochs", True), ("image_size", 16.0)]
    for name, v in bad_type:
        with pytest.raises(TypeError, match=f"fit: {name} must be"):
            FitConfig(**{"steps": None if name == "epochs" else 5, name: v})
    bad_value = [("steps", 0), ("batch_size", 0), ("checkpoint_every", -1), ("log_every", 0),
                 ("anomaly_batch_size", 0), ("lr_decay_every", 0), ("lr_decay_factor", 0.0),
                 ("lr_decay_factor", 1.5), ("kmeans_clusters", 0), ("epochs", 0), ("image_size", 0),
                 ("anomaly_sampler", "uniform"), ("amp_dtype", "float8")]
    for name, v in bad_value:
        with pytest.raises(ValueError, match=f"fit: {name} must be"):
            FitConfig(**{"steps": None if name == "epochs" else 5, name: v})
    with pytest.raises(ValueError, match=r"stage_steps\['gan'\]"):
        FitConfig(steps=5, stage_steps={"gan": -1})
    with pytest.raises(ValueError, match="not both"):
        FitConfig(steps=5, epochs=1)
    with pytest.raises(TypeError, match="augment"):
        FitConfig(steps=5, augment="hflip")
    with pytest.raises(TypeError, match="fit: batch_size must be an int >= 1, got str"):  # through fit
        fit(_data(4, 0), None, "ganomaly", steps=1, batch_size="2", progress=False)


def test_the_checkpoint_config_round_trips_and_guards_the_resume(tmp_path):
    """The checkpoint's ``config`` is FitConfig.checkpoint_config of the run (the keys every
    checkpoint has had, in their order); check_resumable accepts it back, refuses a change of
    each setting that decides the training (naming it) and only warns about other images."""
    normal, anomalous = _data(10, 0), _data(5, 1)
    kw = dict(steps=3, stage_steps={"gan": 2}, batch_size=4, anomaly_batch_size=2, seed=11, kmeans_clusters=2,
              augment={"hflip": True}, lr_decay_every=2)
    res = fit(normal, anomalous, "noisy-gan", checkpoint_dir=tmp_path, progress=False, **kw, **TINY_GAN)
    _, meta = load_checkpoint(tmp_path)
    stored = meta["config"]
    assert list(stored) == ["method", "hparams", "image_size", "channels", "batch_size", "anomaly_batch_size",
                            "seed", "budgets", "anomaly_sampler", "kmeans_clusters", "augment", "lr_decay",
                            "world_size", "input_mode", "data"]
    assert stored["input_mode"] == "resize"
    legacy = {k: v for k, v in stored.items() if k != "input_mode"}  # written before input modes
    check_resumable(legacy, stored, type(res.method))  # read as "resize": resumable
    assert stored["budgets"] == {"gan": 2, "encoder": 1} and stored["lr_decay"] == [2, 0.5]
    assert stored["augment"]["hflip"] and stored["anomaly_sampler"] == "kmeans" and stored["world_size"] == 1
    cfg = FitConfig(method="noisy-gan", hparams=TINY_GAN, **kw)
    current = cfg.checkpoint_config(res.method, {"gan": 2, "encoder": 1}, 1, normal, anomalous)
    assert current == stored
    cls = type(res.method)
    check_resumable(stored, current, cls)
    for key in RESUME_KEYS:
        changed = dict(current, **{key: "something else"})
        with pytest.raises(ValueError, match=f"resume: the checkpoint was trained with {key}="):
            check_resumable(stored, changed, cls)
    with pytest.warns(UserWarning, match="images differ"):
        check_resumable(stored, cfg.checkpoint_config(res.method, stored["budgets"], 1, normal + 0.5, anomalous), cls)
    no_anomalies = FitConfig(**kw).checkpoint_config(res.method, stored["budgets"], 1, normal, None)
    assert no_anomalies["anomaly_sampler"] is None and no_anomalies["data"]["anomalous"] is None


def test_jsonl_log_starts_anew_or_truncates_on_resume(tmp_path):
    path = str(tmp_path / "sub" / "log.jsonl")
    with _JsonlLog(path) as log:  # a fresh run creates the folder and the file
        assert log
        for step in range(1, 6):
            log.write({"step": step, "losses": {"l": step}})
    with open(path, "a") as fh:
        fh.write("not json\n{\"eval\": 1}")  # an unreadable line (dropped) and one without a step (kept)
    with _JsonlLog(path, resumed_at=3) as log:
        log.write({"step": 4, "resumed": True})
    lines = [json.loads(x) for x in open(path)]
    assert [x.get("step") for x in lines] == [1, 2, 3, None, 4] and lines[-1]["resumed"] and "time" in lines[0]
    with _JsonlLog(path) as log:  # a fresh run with the same path rewrites it
        log.write({"step": 1})
    assert [json.loads(x)["step"] for x in open(path)] == [1]
    for off in (_JsonlLog(None), _JsonlLog(str(tmp_path / "other.jsonl"), enabled=False)):  # rank > 0
        assert not off
        off.write({"step": 1})
        off.close()
    assert not os.path.exists(tmp_path / "other.jsonl")


@pytest.mark.parametrize("checkpoint", ["ck/last.ckpt", None])
def test_the_cli_reads_the_checkpoint_from_training_interrupted(tmp_path, capsys, monkeypatch, checkpoint):
    """`anomgan train` interrupted: exit 130 and one line; the --resume hint comes from
    TrainingInterrupted.checkpoint, not from parsing the message."""
    import anomgan.api
    from anomgan.apps.cli import EXIT_INTERRUPTED, main

    ckpt = None if checkpoint is None else str(tmp_path / checkpoint)

    def interrupted(*a, **k):
        raise TrainingInterrupted(7, ckpt)

    monkeypatch.setattr(anomgan.api, "train", interrupted)
    argv = ["train", "--normal", str(tmp_path), "--out", str(tmp_path / "m.anomgan"), "--steps", "9", "--quiet"]
    assert main(argv) == EXIT_INTERRUPTED
    err = capsys.readouterr().err.strip().splitlines()
    if ckpt is None:
        assert err == ["anomgan: training interrupted after step 7 (no checkpoint_dir: nothing saved)"]
    else:
        assert err == [f"anomgan: training interrupted after step 7; resume from {ckpt} "
                       f"(run the same command with --resume {ckpt})"]
