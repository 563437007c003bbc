"""The training loop: :func:`fit` drives a :class:`anomgan.models.Method` through its stages.

Step budget. ``steps`` is the total number of optimisation steps over all stages
(``method.stages()``, e.g. ["gan", "encoder"] for noisy-gan / anogan, ["main"] otherwise).
``stage_steps={"encoder": 500}`` fixes the budget of the named stages; the stages not named
split what is left of ``steps`` equally (the first ones get the remainder). ``epochs=E``
instead of ``steps`` gives *each* stage E passes over the normal images, i.e.
``E * ceil(N_normal / batch_size)`` steps per stage. One step = one ``method.train_step`` on one
batch of ``batch_size`` normal images (and ``anomaly_batch_size`` anomalous ones when the method
uses anomalies), after the optional augmentation.

Reproducibility. ``seed`` seeds torch's global RNG (and Python's and numpy's) before the
method is built, the batch samplers and the augmentation generator. Two runs with the same
seed, data and settings on the CPU give identical losses and weights. A checkpoint
(``checkpoint_dir/last.ckpt``, written atomically every ``checkpoint_every`` steps, at the end
of each stage and at the end) holds the method's state_dict, the current stage's optimizer
states, the samplers' positions (and k-means clusters), the RNG states (torch CPU and CUDA,
numpy, Python, the augmentation generator), the step/stage counters and the config; ``resume``
restarts from it and the following losses equal those of an uninterrupted run.

Failure. A NaN or infinite loss raises :class:`NonFiniteLossError` (naming the step, stage and
loss) before anything else is written, so ``last.ckpt`` stays the last good checkpoint.

AMP: ``amp=True`` only acts on CUDA: the train step runs under ``torch.autocast`` with
``amp_dtype`` ("bfloat16", the default, or "float16"). No GradScaler is used, because the
Method interface runs ``loss.backward()`` and ``optimizer.step()`` inside ``train_step`` where
the loop cannot scale the loss; bfloat16 has float32's exponent range and needs no loss
scaling; float16 without scaling may underflow small gradients (documented risk; prefer
bfloat16). On the CPU ``amp`` is ignored (with a warning).

``compile=True`` compiles each network of the method in place (``nn.Module.compile``), so the
state_dict keys and checkpoints do not change; a string names the torch.compile backend
(``compile="eager"`` only traces, e.g. for tests). Multi-GPU / multi-process: see :mod:`anomgan.training.distributed`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import os
import random
import time
import warnings
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from .. import fileio
from ..data import Augment, EpochBatchSampler, KMeansBalancedSampler, as_images
from . import distributed as dd
from .state import decode, encode

CHECKPOINT_KIND = "checkpoint"
CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "last.ckpt"


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; ``step`` (1-based global step), ``stage``, ``loss``
    (its name) and ``value`` say where. The last good checkpoint is left in place."""

    def __init__(self, step: int, stage: str, loss: str, value: float, checkpoint: str | None):
        self.step, self.stage, self.loss, self.value, self.checkpoint = step, stage, loss, value, checkpoint
        where = f"; the last good checkpoint is {checkpoint}" if checkpoint else "; no checkpoint was written"
        super().__init__(f"loss {loss!r} is {value} at step {step} (stage {stage!r}){where}")


@dataclasses.dataclass
class FitResult:
    """``method``: the trained Method (in eval mode, on ``device``); ``history``: one dict per
    step run by this call, ``{"step": global 1-based step, "stage": str, "losses": {name: float}}``;
    ``last_checkpoint``: path of the last checkpoint written (None without ``checkpoint_dir``);
    ``evaluations``: one dict per ``evaluate`` call made by this run,
    ``{"step": global step, "stage": str, **what evaluate returned}``."""
    method: Any
    history: list[dict]
    last_checkpoint: str | None
    evaluations: list[dict] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------------------------
def stage_budgets(stages: list[str], steps: int | None, epochs: int | None, steps_per_epoch: int,
                  stage_steps: dict[str, int] | None) -> dict[str, int]:
    """Steps per stage (module doc). Raises ValueError on contradictory or bad budgets."""
    fixed = dict(stage_steps or {})
    unknown = sorted(set(fixed) - set(stages))
    if unknown:
        raise ValueError(f"stage_steps: unknown stage(s) {unknown}; the method's stages are {stages}")
    for k, v in fixed.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"stage_steps[{k!r}] must be an int >= 0, got {v!r}")
    if steps is not None and epochs is not None:
        raise ValueError("give steps or epochs, not both")
    free = [s for s in stages if s not in fixed]
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
        return {s: fixed.get(s, epochs * steps_per_epoch) for s in stages}
    if steps is None:
        if free:
            raise ValueError(f"give steps or epochs (or stage_steps for every stage of {stages})")
        return {s: fixed[s] for s in stages}
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    left = steps - sum(fixed.values())
    if left < 0 or (free and left < len(free)):
        raise ValueError(f"steps={steps} cannot cover stage_steps={fixed} plus >= 1 step for each of {free}")
    out = dict(fixed)
    for i, s in enumerate(free):
        out[s] = left // len(free) + (1 if i < left % len(free) else 0)
    return {s: out[s] for s in stages}


def _build_method(method: Any, image_size: int, channels: int, hparams: dict):
    from ..models import Method, get_method

    if isinstance(method, Method):
        if hparams:
            raise ValueError(f"hparams {sorted(hparams)} given with a Method instance; set them on the instance")
        if method.image_size != image_size or method.channels != channels:
            raise ValueError(f"method is built for {method.channels}x{method.image_size}x{method.image_size} "
                             f"images, the data is {channels}x{image_size}x{image_size}")
        return method
    cls = get_method(method) if isinstance(method, str) else method
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"method must be a method name, a Method class or instance, got {method!r}")
    return cls(image_size, channels, **hparams)


def _networks(method) -> list[torch.nn.Module]:
    return [m for m in method.children() if any(True for _ in m.parameters())]


def _rng_state() -> dict[str, Any]:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(legacy=False), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available():
        cuda = list(st["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    random.seed(seed)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """(state, meta) of a checkpoint written by :func:`fit` (nested state with tensors)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_NAME)
    tensors, meta, _ = fileio.load_bundle(path, kind=CHECKPOINT_KIND, max_format_version=CHECKPOINT_FORMAT)
    return decode(meta["state"], tensors), meta


def _json_norm(v: Any) -> Any:
    return json.loads(json.dumps(v))


def _truncate_log(path: str, step: int) -> None:
    """Drop JSONL lines of steps after ``step`` (written by a run that was later resumed)."""
    if not os.path.isfile(path):
        return
    keep = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
            except json.JSONDecodeError:
                continue
    fileio.atomic_write_text(path, "".join(keep))


def set_decayed_lr(optimizers: dict[str, torch.optim.Optimizer], scale: float) -> None:
    """lr = initial_lr * scale for every parameter group (a stateless schedule: resuming at step
    k gives the same learning rate as the uninterrupted run)."""
    for o in optimizers.values():
        for group in o.param_groups:
            group["lr"] = group["initial_lr"] * scale


# ---------------------------------------------------------------------------------------------
def fit(normal: Any, anomalous: Any = None, method: Any = "noisy-gan", *,
        anomaly_labels: Any = None,
        image_size: int | None = None, channels: int | None = None,
        steps: int | None = None, epochs: int | None = None, stage_steps: dict[str, int] | None = None,
        batch_size: int = 64, anomaly_batch_size: int | None = None,
        anomaly_sampler: str = "kmeans", kmeans_clusters: int = 10,
        augment: dict | Augment | None = None,
        seed: int = 0,
        checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 1000,
        resume: str | os.PathLike | None = None,
        log_path: str | os.PathLike | None = None, log_every: int = 1,
        progress: bool = True,
        device: str | torch.device = "cpu", amp: bool = False, amp_dtype: str = "bfloat16",
        compile: bool | str = False, sync_batchnorm: bool = False,
        lr_decay_every: int | None = None, lr_decay_factor: float = 0.5,
        evaluate: Callable[[Any, int], Mapping[str, float] | None] | None = None,
        evaluate_every: int | None = None, evaluate_at: Iterable[int] | None = None,
        **hparams: Any) -> FitResult:
    """Train ``method`` on ``normal`` images (and ``anomalous`` ones when the method uses them).

    Images: anything :func:`anomgan.data.as_images` reads (folder, paths, PIL images, numpy /
    torch arrays), converted to float32 (N, channels, image_size, image_size) in [0, 1].
    ``image_size`` defaults to the normal images' side (they must then be square);
    ``channels`` to their channel count. ``anomaly_labels``: optional (M,) anomaly class ids
    for the k-means balancing (one class when None).

    Batches: normal images by a seeded epoch shuffler; anomalous ones by the k-means balanced
    sampler of Kim et al. (``anomaly_sampler="kmeans"``, ``kmeans_clusters`` per class) or a
    plain shuffler (``"random"``). ``augment``: None or a dict of :class:`anomgan.data.Augment`
    options (hflip, vflip, rot90, crop, pad_crop), applied to both kinds of batches.

    Budget (``steps`` | ``epochs``, ``stage_steps``), checkpoints (``checkpoint_dir``,
    ``checkpoint_every``, ``resume``: a checkpoint file or a checkpoint_dir), AMP, compile and
    multi-process training: see the module doc. ``log_path``: JSONL file (rewritten by a fresh run; on
    resume, lines after the checkpoint's step are dropped, then appended), one line every
    ``log_every`` steps with step, stage, losses and each optimizer's learning rate (rank 0
    only). ``lr_decay_every``: step decay of every optimizer's learning rate (Kim et al. halve
    it every 50 epochs): at step k of a stage (counted from 0) lr = lr_0 * lr_decay_factor **
    (k // lr_decay_every); None keeps it constant. ``progress``: a tqdm bar with the current
    losses. ``hparams`` go to the method's constructor. Returns a :class:`FitResult`; raises
    :class:`NonFiniteLossError` on a NaN/inf loss.

    Evaluation during training: ``evaluate(method, step)`` is called after global step ``step``
    when ``step`` is a multiple of ``evaluate_every`` or is in ``evaluate_at`` (global 1-based
    steps), on every process, after that step's checkpoint. It sees the method in eval mode
    (e.g. to score validation images with a :class:`anomgan.Detector`) and returns a dict of
    numbers (or None); they go to ``FitResult.evaluations``, to the log (a line with an
    ``"eval"`` key) and to the progress bar. The training modes and every RNG state are restored
    afterwards, so evaluating does not change the trained weights; a callback that changes the
    weights or optimizer state does.
    Steps in ``evaluate_at`` that this run does not reach (or has already passed, on resume) are
    not evaluated.
    """
    if anomaly_sampler not in ("kmeans", "random"):
        raise ValueError(f"anomaly_sampler must be 'kmeans' or 'random', got {anomaly_sampler!r}")
    for name, v in (("batch_size", batch_size), ("checkpoint_every", checkpoint_every), ("log_every", log_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if amp_dtype not in ("bfloat16", "float16"):
        raise ValueError(f"amp_dtype must be 'bfloat16' or 'float16', got {amp_dtype!r}")
    if lr_decay_every is not None and (isinstance(lr_decay_every, bool) or not isinstance(lr_decay_every, int)
                                       or lr_decay_every < 1):
        raise ValueError(f"lr_decay_every must be None or an int >= 1 (steps), got {lr_decay_every!r}")
    if isinstance(lr_decay_factor, bool) or not isinstance(lr_decay_factor, (int, float)) \
            or not 0 < lr_decay_factor <= 1:
        raise ValueError(f"lr_decay_factor must be a number in (0, 1], got {lr_decay_factor!r}")
    evaluate_at = _check_evaluation(evaluate, evaluate_every, evaluate_at)
    anomaly_batch_size = batch_size if anomaly_batch_size is None else anomaly_batch_size
    if isinstance(anomaly_batch_size, bool) or not isinstance(anomaly_batch_size, int) or anomaly_batch_size < 1:
        raise ValueError(f"anomaly_batch_size must be an int >= 1, got {anomaly_batch_size!r}")
    device = torch.device(device)
    info, device = dd.setup(device)
    result = _fit(**locals())
    dd.finish(info)
    return result


def _fit(*, normal, anomalous, method, anomaly_labels, image_size, channels, steps, epochs, stage_steps,
         batch_size, anomaly_batch_size, anomaly_sampler, kmeans_clusters, augment, seed, checkpoint_dir,
         checkpoint_every, resume, log_path, log_every, progress, device, amp, amp_dtype, compile,
         sync_batchnorm, lr_decay_every, lr_decay_factor, evaluate, evaluate_every, evaluate_at, hparams,
         info, **_):
    from tqdm.auto import tqdm

    if info.enabled:
        for name, b in (("batch_size", batch_size), ("anomaly_batch_size", anomaly_batch_size)):
            if b % info.world_size:
                raise ValueError(f"{name}={b} must be a multiple of the world size {info.world_size} "
                                 "(each rank gets an equal shard of the global batch)")

    # ---- data ---------------------------------------------------------------------------
    x_n = as_images(normal, image_size=image_size, channels=channels, name="normal")
    if image_size is None:
        if x_n.shape[-1] != x_n.shape[-2]:
            raise ValueError(f"normal images are {x_n.shape[-2]}x{x_n.shape[-1]}; pass image_size= "
                             "(methods train on square images)")
        image_size = int(x_n.shape[-1])
    channels = int(x_n.shape[1])
    x_a = None
    if anomalous is not None:
        x_a = as_images(anomalous, image_size=image_size, channels=channels, name="anomalous")
    if anomaly_labels is not None and x_a is None:
        raise ValueError("anomaly_labels given without anomalous images")

    # ---- method -------------------------------------------------------------------------
    _seed_all(seed)
    model = _build_method(method, image_size, channels, hparams)
    if x_a is not None and model.uses_anomalies == "no":
        raise ValueError(f"method {model.name!r} does not use anomalous images; pass anomalous=None")
    if x_a is None and model.uses_anomalies == "required":
        raise ValueError(f"method {model.name!r} needs anomalous images (anomalous=...)")
    if sync_batchnorm and info.enabled and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if info.enabled:
        dd.broadcast_module(model)
    if compile:
        kw = {"backend": compile} if isinstance(compile, str) else {}
        for net in _networks(model):
            net.compile(**kw)
    stages = list(model.stages())

    normal_sampler = EpochBatchSampler(x_n.shape[0], batch_size, seed=seed)
    anom_sampler = None
    if x_a is not None:
        if anomaly_sampler == "kmeans":
            anom_sampler = KMeansBalancedSampler(x_a, anomaly_batch_size, labels=anomaly_labels,
                                                 n_clusters=kmeans_clusters, seed=seed + 1)
        else:
            anom_sampler = EpochBatchSampler(x_a.shape[0], anomaly_batch_size, seed=seed + 1)
    if info.enabled and isinstance(anom_sampler, KMeansBalancedSampler) and resume is None:
        # k-means may differ in the last bit between processes: every rank uses rank 0's clusters
        clusters = anom_sampler.clusters if info.is_main else torch.empty(x_a.shape[0], dtype=torch.int64)
        anom_sampler.set_clusters(dd.broadcast_tensor(clusters))
    aug = Augment.from_config(augment)
    aug_gen = torch.Generator()
    aug_gen.manual_seed((seed * 7919 + 17) % (2 ** 63))
    budgets = stage_budgets(stages, steps, epochs, normal_sampler.steps_per_epoch, stage_steps)

    config = {"method": model.name, "hparams": model.hparams(), "image_size": image_size, "channels": channels,
              "batch_size": batch_size, "anomaly_batch_size": anomaly_batch_size, "seed": seed,
              "budgets": budgets, "anomaly_sampler": anomaly_sampler if x_a is not None else None,
              "kmeans_clusters": kmeans_clusters, "augment": aug.config() if aug else None,
              "lr_decay": [lr_decay_every, float(lr_decay_factor)] if lr_decay_every else None,
              "world_size": info.world_size,
              "data": {"normal": [*x_n.shape, float(x_n.double().sum())],
                       "anomalous": [*x_a.shape, float(x_a.double().sum())] if x_a is not None else None}}

    # ---- resume -------------------------------------------------------------------------
    stage_idx, stage_step, global_step = 0, 0, 0
    opt_state = None
    if resume is not None:
        state, meta = load_checkpoint(resume)
        old = dict(meta.get("config", {}))
        if isinstance(old.get("hparams"), dict):  # keys the checkpoint predates: their old values
            old["hparams"] = type(model).stored_hparams(old["hparams"])
        for key in ("method", "hparams", "image_size", "channels", "batch_size", "anomaly_batch_size", "seed",
                    "anomaly_sampler", "augment", "lr_decay"):
            if _json_norm(old.get(key)) != _json_norm(config[key]):
                raise ValueError(f"resume: the checkpoint was trained with {key}={old.get(key)!r}, "
                                 f"this call has {key}={config[key]!r}")
        if _json_norm(old.get("data")) != _json_norm(config["data"]):
            warnings.warn(f"resume: the images differ from those the checkpoint was trained on "
                          f"(shape and sum {old.get('data')} vs {config['data']}); the batch order will not "
                          "continue the original run", UserWarning, stacklevel=3)
        model.load_state_dict(state["method"])
        normal_sampler.load_state_dict(state["samplers"]["normal"])
        if anom_sampler is not None:
            anom_sampler.load_state_dict(state["samplers"]["anomalous"])
        aug_gen.set_state(state["rng"]["augment"])
        _set_rng_state(state["rng"])
        stage_idx, stage_step, global_step = state["stage_index"], state["stage_step"], state["step"]
        if stages[stage_idx] != state["stage"]:
            raise ValueError(f"resume: checkpoint stage {state['stage']!r} is not stage #{stage_idx} of {stages}")
        opt_state = state["optimizers"]
        if log_path is not None and info.is_main:
            _truncate_log(os.fspath(log_path), global_step)

    total = sum(budgets.values())
    ckpt_path = os.path.join(os.fspath(checkpoint_dir), CHECKPOINT_NAME) if checkpoint_dir is not None else None
    last_ckpt = os.fspath(resume) if resume is not None else None
    if last_ckpt is not None and os.path.isdir(last_ckpt):
        last_ckpt = os.path.join(last_ckpt, CHECKPOINT_NAME)
    history: list[dict] = []
    evaluations: list[dict] = []
    use_amp = bool(amp) and device.type == "cuda"
    if amp and not use_amp:
        warnings.warn("amp=True has no effect on the CPU; training in float32", UserWarning, stacklevel=3)
    autocast_dtype = torch.bfloat16 if amp_dtype == "bfloat16" else torch.float16
    log_fh = None
    if log_path is not None and info.is_main:  # a fresh run starts the log anew; a resumed one appends
        os.makedirs(os.path.dirname(os.path.abspath(os.fspath(log_path))), exist_ok=True)
        log_fh = open(os.fspath(log_path), "a" if resume is not None else "w", encoding="utf-8")
    bar = tqdm(total=total, initial=global_step, disable=not progress or not info.is_main, desc=model.name,
               dynamic_ncols=True)

    def save(stage: str, stage_index: int, stage_step_done: int, optimizers) -> None:
        nonlocal last_ckpt
        if info.enabled:
            dd.average_buffers(model)
        if ckpt_path is None or not info.is_main:
            return
        state = {"method": model.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                 "samplers": {"normal": normal_sampler.state_dict(),
                              **({"anomalous": anom_sampler.state_dict()} if anom_sampler is not None else {})},
                 "rng": {**_rng_state(), "augment": aug_gen.get_state()},
                 "stage": stage, "stage_index": stage_index, "stage_step": stage_step_done, "step": global_step}
        tensors: dict[str, torch.Tensor] = {}
        doc = encode(state, tensors, "s")
        fileio.save_bundle(ckpt_path, tensors, {"state": doc, "config": config}, kind=CHECKPOINT_KIND,
                           format_version=CHECKPOINT_FORMAT)
        last_ckpt = ckpt_path

    def batch(sampler, x):
        full = sampler.next_batch()
        idx = dd.shard(full, info)
        b = x[idx]
        if aug:  # the global batch's random draws, this rank's rows
            b = aug(b, aug_gen, total=full.shape[0], offset=info.rank * idx.shape[0])
        return b.to(device, non_blocking=True)

    # Ctrl-C: the step in flight finishes, a checkpoint of that consistent state is written, then
    # KeyboardInterrupt is raised (a second Ctrl-C stops at once).
    interrupted: list[bool] = []

    def on_sigint(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)

    in_main_thread = threading.current_thread() is threading.main_thread()
    prev_handler = signal.signal(signal.SIGINT, on_sigint) if in_main_thread else None
    try:
        for si in range(stage_idx, len(stages)):
            stage = stages[si]
            optimizers = model.make_optimizers(stage)
            for o in optimizers.values():
                for group in o.param_groups:
                    group.setdefault("initial_lr", group["lr"])
            if opt_state is not None:
                for k, o in optimizers.items():
                    if k not in opt_state:
                        raise ValueError(f"resume: no state for optimizer {k!r} of stage {stage!r}")
                    o.load_state_dict(opt_state[k])
                opt_state = None
            hooks = dd.sync_gradients_on_step(optimizers) if info.enabled else []
            start = stage_step if si == stage_idx else 0
            for k in range(start, budgets[stage]):
                if lr_decay_every is not None:
                    set_decayed_lr(optimizers, lr_decay_factor ** (k // lr_decay_every))
                nb = batch(normal_sampler, x_n)
                ab = batch(anom_sampler, x_a) if anom_sampler is not None else None
                with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=use_amp):
                    losses = model.train_step(stage, nb, ab, optimizers)
                global_step += 1
                losses = {n: float(v) for n, v in losses.items()}
                bad = [(n, v) for n, v in losses.items() if not math.isfinite(v)]
                if info.enabled and dd.any_rank(bool(bad)) and not bad:  # stop every rank together
                    bad = [("(on another rank)", float("nan"))]
                if bad:
                    raise NonFiniteLossError(global_step, stage, bad[0][0], bad[0][1], last_ckpt)
                history.append({"step": global_step, "stage": stage, "losses": losses})
                if log_fh is not None and global_step % log_every == 0:
                    lrs = {n: o.param_groups[0]["lr"] for n, o in optimizers.items()}
                    log_fh.write(json.dumps({"step": global_step, "stage": stage, "losses": losses, "lr": lrs,
                                             "time": time.time()}) + "\n")
                    log_fh.flush()
                bar.update(1)
                bar.set_postfix({n: f"{v:.4g}" for n, v in losses.items()}, refresh=False)
                done = k + 1
                if done == budgets[stage] or global_step % checkpoint_every == 0 or interrupted:
                    save(stage, si, done, optimizers)
                if evaluate is not None and not interrupted and (
                        global_step in evaluate_at or (evaluate_every and global_step % evaluate_every == 0)):
                    record = _run_evaluation(evaluate, model, global_step, stage)
                    evaluations.append(record)
                    numbers = {k: v for k, v in record.items() if k not in ("step", "stage")}
                    if log_fh is not None:
                        log_fh.write(json.dumps({"step": global_step, "stage": stage, "eval": numbers,
                                                 "time": time.time()}) + "\n")
                        log_fh.flush()
                    if progress and info.is_main:
                        bar.write(f"{model.name} step {global_step}: "
                                  + ", ".join(f"{k}={v:.4g}" for k, v in numbers.items()))
                if interrupted:
                    where = f"; resume from {last_ckpt}" if last_ckpt else " (no checkpoint_dir: nothing saved)"
                    raise KeyboardInterrupt(f"training interrupted after step {global_step}{where}")
            if budgets[stage] == start:  # resumed exactly at a stage end (or an empty stage)
                save(stage, si, start, optimizers)
            for h in hooks:
                h.remove()
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, prev_handler)
        bar.close()
        if log_fh is not None:
            log_fh.close()
    model.eval()
    return FitResult(method=model, history=history, last_checkpoint=last_ckpt, evaluations=evaluations)


def _check_evaluation(evaluate, evaluate_every, evaluate_at) -> frozenset[int]:
    """The validated ``evaluate_at`` steps (fit's evaluation arguments; ValueError/TypeError)."""
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"evaluate must be a callable evaluate(method, step) -> dict, got {type(evaluate).__name__}")
    if evaluate_every is not None and (isinstance(evaluate_every, bool) or not isinstance(evaluate_every, int)
                                       or evaluate_every < 1):
        raise ValueError(f"evaluate_every must be None or an int >= 1 (steps), got {evaluate_every!r}")
    steps = []
    for s in (evaluate_at or ()):
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"evaluate_at must hold global steps (ints >= 1), got {s!r}")
        steps.append(int(s))
    if evaluate is None and (evaluate_every is not None or steps):
        raise ValueError("evaluate_every / evaluate_at given without evaluate=")
    return frozenset(steps)


def _run_evaluation(evaluate, model, step: int, stage: str) -> dict:
    """Call ``evaluate(model, step)`` in eval mode; return ``{"step", "stage", **its numbers as
    floats}``; restore the training modes, the RNG states and the parameters' .grad (a latent
    search may accumulate into them)."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, None if p.grad is None else p.grad.clone()) for p in model.parameters()]
    rng = _rng_state()
    model.eval()
    try:
        out = evaluate(model, step)
    finally:
        for m, mode in modes:
            m.training = mode
        for p, g in grads:
            p.grad = g
        _set_rng_state(rng)
    if out is None:
        out = {}
    if not isinstance(out, Mapping):
        raise TypeError(f"evaluate must return a dict of numbers or None, got {type(out).__name__}")
    bad = {k: v for k, v in out.items() if k in ("step", "stage")}
    if bad:
        raise ValueError(f"evaluate returned the reserved key(s) {sorted(bad)}")
    try:
        return {"step": step, "stage": stage, **{str(k): float(v) for k, v in out.items()}}
    except (TypeError, ValueError) as e:
        raise TypeError(f"evaluate must return numbers, got {out!r}") from e
