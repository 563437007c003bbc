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

Interrupts. Ctrl-C (SIGINT) or SIGTERM (job schedulers, ``docker stop``), received while fit runs
in the main thread, lets the step in flight finish, writes a checkpoint of that step, then raises
:class:`TrainingInterrupted` (a KeyboardInterrupt carrying the checkpoint's path, the step and the
signal); a second signal stops at once (KeyboardInterrupt with ``signum``). The previous handlers
are back when fit returns.

Resume budget. Resuming a checkpoint after global step S with a budget (``steps``, ``epochs``,
``stage_steps``) of fewer than S steps in total, or of fewer steps for a stage than the
checkpoint already ran in it, raises ValueError (it would silently train less than asked).

Structure. :class:`~anomgan.training.config.FitConfig` holds fit's validated arguments and the
checkpoints' ``config``; :func:`_setup` loads the images and builds the method and samplers;
:func:`_resume` restores a checkpoint (:mod:`anomgan.training.checkpoint`); :class:`_Trainer`
runs the stages (:meth:`_Trainer.run_stage`), each step being :func:`_train_step`, with the log
(:class:`anomgan.training.log._JsonlLog`), the checkpoints
(:class:`anomgan.training.checkpoint._Checkpointer`) and :func:`_maybe_evaluate` after each.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
import os
import warnings
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import torch

from ..data import Augment, EpochBatchSampler, KMeansBalancedSampler, as_images
from . import distributed as dd
from .checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_KIND, CHECKPOINT_NAME, TrainingState, _Checkpointer,
                         load_checkpoint, rng_state, seed_all, set_rng_state)
from .config import FitConfig, check_resumable, check_resume_budget, stage_budgets
from .log import _JsonlLog

__all__ = ["fit", "FitResult", "NonFiniteLossError", "TrainingInterrupted", "load_checkpoint", "stage_budgets",
           "set_decayed_lr", "CHECKPOINT_NAME", "CHECKPOINT_KIND", "CHECKPOINT_FORMAT"]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; ``step`` (1-based global step), ``stage``, ``loss``
    (its name) and ``value`` say where. The last good checkpoint is left in place."""

    def __init__(self, step: int, stage: str, loss: str, value: float, checkpoint: str | None):
        self.step, self.stage, self.loss, self.value, self.checkpoint = step, stage, loss, value, checkpoint
        where = f"; the last good checkpoint is {checkpoint}" if checkpoint else "; no checkpoint was written"
        super().__init__(f"loss {loss!r} is {value} at step {step} (stage {stage!r}){where}")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (``signum`` SIGINT) or SIGTERM stopped :func:`fit` after global step ``step``
    (1-based, the last step run); ``checkpoint``: the path of the checkpoint to resume from
    (written for that step, or the one this run resumed from without a checkpoint_dir), None
    when there is none."""

    def __init__(self, step: int, checkpoint: str | None, signum: int = signal.SIGINT):
        self.step, self.checkpoint, self.signum = step, checkpoint, signum
        where = f"; resume from {checkpoint}" if checkpoint else " (no checkpoint_dir: nothing saved)"
        how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        super().__init__(f"training {how} after step {step}{where}")


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
        input_mode: str = "resize", time_budget: float | str | None = None,
        **hparams: Any) -> FitResult:
    """Train ``method`` on ``normal`` images (and ``anomalous`` ones when the method uses them).

    Images: anything :func:`anomgan.data.as_images` reads (folder, paths, PIL images, numpy /
    torch arrays), converted to float32 (N, channels, image_size, image_size) in [0, 1].
    ``image_size`` defaults to the normal images' side (they must then be square);
    ``channels`` to their channel count. ``input_mode="tile"`` (``image_size`` required) keeps
    the images at their own size (at least image_size on each side; each set's images of one
    size) and trains on one random image_size crop per image per step (drawn by the
    augmentation generator, before the augmentation): the model learns tiles at native
    resolution, as a tiled detector will score them. ``anomaly_labels``: optional (M,) anomaly class ids
    for the k-means balancing (one class when None).

    Batches: normal images by a seeded epoch shuffler; anomalous ones by the k-means balanced
    sampler of Kim et al. (``anomaly_sampler="kmeans"``, ``kmeans_clusters`` per class) or a
    plain shuffler (``"random"``). ``augment``: None or a dict of :class:`anomgan.data.Augment`
    options (hflip, vflip, rot90, crop, pad_crop), applied to both kinds of batches.

    Budget (``steps`` | ``epochs``, ``stage_steps``), wall-clock ``time_budget`` (seconds or
    "90s" / "20m" / "1.5h": the stages share it in proportion to their step budgets and each
    stops when its share is used, so the step budget is then a maximum; without steps or epochs
    each stage may run up to ``TIME_BUDGET_MAX_STEPS`` steps; the time counts over resumes),
    checkpoints (``checkpoint_dir``,
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
    cfg = FitConfig(method=method, image_size=image_size, channels=channels, steps=steps, epochs=epochs,
                    stage_steps=stage_steps, batch_size=batch_size, anomaly_batch_size=anomaly_batch_size,
                    anomaly_sampler=anomaly_sampler, kmeans_clusters=kmeans_clusters, augment=augment, seed=seed,
                    checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
                    log_path=log_path, log_every=log_every, progress=progress, device=device, amp=amp,
                    amp_dtype=amp_dtype, compile=compile, sync_batchnorm=sync_batchnorm,
                    lr_decay_every=lr_decay_every, lr_decay_factor=lr_decay_factor, evaluate=evaluate,
                    evaluate_every=evaluate_every, evaluate_at=evaluate_at, input_mode=input_mode,
                    time_budget=time_budget, hparams=hparams)
    info, device = dd.setup(cfg.device)
    result = _train(dataclasses.replace(cfg, device=device), info, normal, anomalous, anomaly_labels)
    dd.finish(info)
    return result


def _train(cfg: FitConfig, info: dd.DistInfo, normal: Any, anomalous: Any, anomaly_labels: Any) -> FitResult:
    """fit after its arguments are checked and the processes set up (``cfg.device`` is this
    process's device): set-up, resume, then the stages from where the resume left off."""
    from tqdm.auto import tqdm

    run = _setup(cfg, info, normal, anomalous, anomaly_labels)
    start, opt_state = _resume(run)
    ckpt = _Checkpointer(cfg.checkpoint_dir, run.state, run.config, info, resumed_from=cfg.resume)
    log = _JsonlLog(cfg.log_path, resumed_at=start.step if cfg.resume is not None else None, enabled=info.is_main)
    open_ended = cfg.time_budget is not None and cfg.steps is None and cfg.epochs is None
    bar = tqdm(total=None if open_ended else sum(run.budgets.values()), initial=start.step, disable=not cfg.progress or not info.is_main,
               desc=run.model.name, dynamic_ncols=True)
    sigint = _SignalGuard()
    trainer = _Trainer(run, ckpt, log, bar, sigint, start.step)
    try:
        with sigint:
            for si in range(start.stage_index, len(run.stages)):
                first = si == start.stage_index
                trainer.run_stage(si, start.stage_step if first else 0, opt_state if first else None)
    finally:
        bar.close()
        log.close()
    run.model.eval()
    return FitResult(method=run.model, history=trainer.history, last_checkpoint=ckpt.last,
                     evaluations=trainer.evaluations)


# ---- set-up -------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Run:
    """What set-up builds for one fit call: the settings, the processes, the images (``"normal"``
    and, when given, ``"anomalous"``, float32 on the CPU) with a batch sampler for each, the
    method, its stages with their step budgets, the checkpoints' stored config and the training
    state a checkpoint saves (method, samplers, augmentation generator)."""
    cfg: FitConfig
    info: dd.DistInfo
    images: dict[str, torch.Tensor]
    state: TrainingState
    stages: list[str]
    budgets: dict[str, int]
    config: dict

    @property
    def model(self):
        return self.state.model

    def batch(self, kind: str) -> torch.Tensor:
        """This rank's shard of the next global batch of ``kind`` images, augmented (with the
        global batch's random draws), on the device."""
        full = self.state.samplers[kind].next_batch()
        idx = dd.shard(full, self.info)
        if self.cfg.input_mode == "tile":  # the global batch's crops, then this rank's rows
            b = random_crops(self.images[kind], full, self.cfg.image_size, self.state.aug_gen)
            b = b[self.info.rank * idx.shape[0]:(self.info.rank + 1) * idx.shape[0]]
        else:
            b = self.images[kind][idx]
        if self.cfg.augment:
            b = self.cfg.augment(b, self.state.aug_gen, total=full.shape[0], offset=self.info.rank * idx.shape[0])
        return b.to(self.cfg.device, non_blocking=True)


def _setup(cfg: FitConfig, info: dd.DistInfo, normal: Any, anomalous: Any, anomaly_labels: Any) -> _Run:
    """Set-up: load the images, build the method (after seeding the global RNGs with
    ``cfg.seed``), the samplers, the augmentation generator and the stage budgets, in this
    order (the RNG draws of a run depend on it). Raises ValueError / TypeError on arguments
    that contradict the data, the method or the number of processes."""
    if info.enabled:
        for name, b in (("batch_size", cfg.batch_size), ("anomaly_batch_size", cfg.anomaly_batch_size)):
            if b % info.world_size:
                raise ValueError(f"{name}={b} must be a multiple of the world size {info.world_size} "
                                 "(each rank gets an equal shard of the global batch)")
    images = _load_images(cfg, normal, anomalous, anomaly_labels)
    x_n, x_a = images["normal"], images.get("anomalous")
    size = cfg.image_size if cfg.input_mode == "tile" else int(x_n.shape[-1])
    model = _build_model(cfg, info, size, int(x_n.shape[1]), x_a)
    stages = list(model.stages())
    samplers = _build_samplers(cfg, info, images, anomaly_labels)
    aug_gen = torch.Generator()
    aug_gen.manual_seed((cfg.seed * 7919 + 17) % (2 ** 63))
    steps = cfg.steps
    if cfg.time_budget is not None and steps is None and cfg.epochs is None:
        steps = TIME_BUDGET_MAX_STEPS * len(stages)
    budgets = stage_budgets(stages, steps, cfg.epochs, samplers["normal"].steps_per_epoch, cfg.stage_steps)
    if cfg.amp and not cfg.uses_amp:
        warnings.warn("amp=True has no effect on the CPU; training in float32", UserWarning, stacklevel=4)
    return _Run(cfg=cfg, info=info, images=images, state=TrainingState(model, samplers, aug_gen), stages=stages,
                budgets=budgets, config=cfg.checkpoint_config(model, budgets, info.world_size, x_n, x_a))


def _load_images(cfg: FitConfig, normal: Any, anomalous: Any, anomaly_labels: Any) -> dict[str, torch.Tensor]:
    """``{"normal": ..., "anomalous": ...}`` (no "anomalous" without anomalous images) as
    float32 (N, C, S, S): S = ``cfg.image_size`` or the normal images' side (ValueError when
    they are not square), C = ``cfg.channels`` or the normal images' channel count."""
    if cfg.input_mode == "tile":
        return _load_tile_images(cfg, normal, anomalous, anomaly_labels)
    x_n = as_images(normal, image_size=cfg.image_size, channels=cfg.channels, name="normal")
    if cfg.image_size is None and x_n.shape[-1] != x_n.shape[-2]:
        raise ValueError(f"normal images are {x_n.shape[-2]}x{x_n.shape[-1]}; pass image_size= "
                         "(methods train on square images)")
    images = {"normal": x_n}
    if anomalous is not None:
        images["anomalous"] = as_images(anomalous, image_size=cfg.image_size or int(x_n.shape[-1]),
                                        channels=int(x_n.shape[1]), name="anomalous")
    elif anomaly_labels is not None:
        raise ValueError("anomaly_labels given without anomalous images")
    return images


def _load_tile_images(cfg: FitConfig, normal: Any, anomalous: Any, anomaly_labels: Any) -> dict[str, torch.Tensor]:
    """:func:`_load_images` for ``input_mode="tile"``: each set at its own size (not resized),
    ValueError when a side is smaller than the tile ``cfg.image_size``."""
    images = {"normal": as_images(normal, channels=cfg.channels, name="normal")}
    if anomalous is not None:
        images["anomalous"] = as_images(anomalous, channels=int(images["normal"].shape[1]), name="anomalous")
    elif anomaly_labels is not None:
        raise ValueError("anomaly_labels given without anomalous images")
    for kind, x in images.items():
        if min(x.shape[-2:]) < cfg.image_size:
            raise ValueError(f"input_mode='tile': the {kind} images are {x.shape[-2]}x{x.shape[-1]}, "
                             f"smaller than the tile image_size={cfg.image_size}")
    return images


def random_crops(images: torch.Tensor, idx: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """(len(idx), C, size, size): one uniformly placed size x size crop of each ``images[idx]``
    (offsets drawn from ``gen``: two numbers per image, always, so the stream is fixed)."""
    H, W = images.shape[-2:]
    n = idx.shape[0]
    oy = torch.randint(H - size + 1, (n,), generator=gen).tolist()
    ox = torch.randint(W - size + 1, (n,), generator=gen).tolist()
    return torch.stack([images[i, :, y:y + size, x:x + size]
                        for i, y, x in zip(idx.tolist(), oy, ox)])


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


def _build_model(cfg: FitConfig, info: dd.DistInfo, image_size: int, channels: int,
                 anomalous: torch.Tensor | None):
    """The method, ready to train: global RNGs seeded with ``cfg.seed``, built (a name, class
    or instance with ``cfg.hparams``), checked to accept ``anomalous`` or its absence
    (``Method.check_uses_anomalies``), SyncBatchNorm when asked (CUDA, several processes), on
    the device, rank 0's weights on every rank, its networks compiled when asked."""
    seed_all(cfg.seed)
    model = _build_method(cfg.method, image_size, channels, cfg.hparams)
    model.check_uses_anomalies(anomalous)
    if cfg.sync_batchnorm and info.enabled and cfg.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(cfg.device)
    if info.enabled:
        dd.broadcast_module(model)
    if cfg.compile:
        kw = {"backend": cfg.compile} if isinstance(cfg.compile, str) else {}
        for net in _networks(model):
            net.compile(**kw)
    return model


#: per-stage step cap when only a time budget is given (far above what any budget reaches)
TIME_BUDGET_MAX_STEPS = 10_000_000


def _build_samplers(cfg: FitConfig, info: dd.DistInfo, images: dict[str, torch.Tensor], anomaly_labels: Any) -> dict:
    """A sampler per image kind: a seeded epoch shuffler (``cfg.seed``) for the normal images;
    for the anomalous ones the k-means balanced sampler or a shuffler (``cfg.seed + 1``). With
    several processes a fresh run's k-means clusters are rank 0's on every rank (k-means may
    differ in the last bit between processes; a resume loads the checkpoint's)."""
    samplers = {"normal": EpochBatchSampler(images["normal"].shape[0], cfg.batch_size, seed=cfg.seed)}
    x_a = images.get("anomalous")
    if x_a is None:
        return samplers
    if cfg.anomaly_sampler == "kmeans":
        s = KMeansBalancedSampler(x_a, cfg.anomaly_batch_size, labels=anomaly_labels,
                                  n_clusters=cfg.kmeans_clusters, seed=cfg.seed + 1)
        if info.enabled and cfg.resume is None:
            clusters = s.clusters if info.is_main else torch.empty(x_a.shape[0], dtype=torch.int64)
            s.set_clusters(dd.broadcast_tensor(clusters))
    else:
        s = EpochBatchSampler(x_a.shape[0], cfg.anomaly_batch_size, seed=cfg.seed + 1)
    samplers["anomalous"] = s
    return samplers


# ---- resume -------------------------------------------------------------------------------------
class _Position(NamedTuple):
    """Where training continues: stage #``stage_index`` after its step ``stage_step`` (from 0),
    global step ``step`` (the number of steps already run)."""
    stage_index: int
    stage_step: int
    step: int


def _resume(run: _Run) -> tuple[_Position, dict | None]:
    """Resume: without ``cfg.resume``, the start (0, 0, 0) and no optimizer state. Otherwise
    load that checkpoint, refuse it (ValueError) when it was trained with other settings
    (:func:`~anomgan.training.config.check_resumable`) or its stage is not the method's, restore
    the method, samplers and RNG states, and return its position with the optimizer states of its
    stage (for :meth:`_Trainer.run_stage`)."""
    if run.cfg.resume is None:
        return _Position(0, 0, 0), None
    state, meta = load_checkpoint(run.cfg.resume)
    check_resumable(meta.get("config", {}), run.config, type(run.model), stacklevel=4)
    pos = _Position(state["stage_index"], state["stage_step"], state["step"])
    if not 0 <= pos.stage_index < len(run.stages) or run.stages[pos.stage_index] != state["stage"]:
        raise ValueError(f"resume: checkpoint stage {state['stage']!r} is not stage #{pos.stage_index} of {run.stages}")
    check_resume_budget(run.cfg, run.stages, run.budgets, pos, meta.get("config", {}).get("budgets"))
    run.state.restore(state)
    return pos, state["optimizers"]


# ---- the stages and their steps -----------------------------------------------------------------
class _SignalGuard:
    """Ctrl-C / SIGTERM handling while training: the first SIGINT or SIGTERM only sets
    ``requested`` and ``signum`` (the loop finishes the step in flight, checkpoints it and raises
    :class:`TrainingInterrupted`); a second one raises KeyboardInterrupt (with ``signum``) at once.
    Installed in the main thread only (the only one that may set signal handlers); the previous
    handlers are back on exit."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    requested = False
    signum = signal.SIGINT

    def __enter__(self) -> "_SignalGuard":
        self._main = threading.current_thread() is threading.main_thread()
        self._prev = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS} if self._main else {}
        return self

    def _on_signal(self, signum, frame) -> None:
        if self.requested:
            exc = KeyboardInterrupt()
            exc.signum = signum
            raise exc
        self.requested, self.signum = True, signum

    def __exit__(self, *exc) -> None:
        for s, prev in self._prev.items():
            signal.signal(s, prev)



def _make_optimizers(model, stage: str, opt_state: dict | None) -> dict[str, torch.optim.Optimizer]:
    """``stage``'s optimizers, each parameter group's ``initial_lr`` kept for the lr schedule,
    with ``opt_state`` (a checkpoint's, when resuming inside this stage) loaded (ValueError when
    it lacks one of them)."""
    optimizers = model.make_optimizers(stage)
    for o in optimizers.values():
        for group in o.param_groups:
            group.setdefault("initial_lr", group["lr"])
    if opt_state is not None:
        for k, o in optimizers.items():
            if k not in opt_state:
                raise ValueError(f"resume: no state for optimizer {k!r} of stage {stage!r}")
            o.load_state_dict(opt_state[k])
    return optimizers


def _train_step(run: _Run, stage: str, k: int, optimizers: dict, step: int, checkpoint: str | None) -> dict:
    """The step: global step ``step``, step ``k`` (from 0) of ``stage``: set the decayed learning
    rate, draw the next normal (and anomalous) batch, run ``method.train_step`` (under autocast
    with AMP) and return its losses as floats. A NaN/inf loss (on any rank: all stop together)
    raises :class:`NonFiniteLossError` naming ``checkpoint`` (the last good one)."""
    cfg = run.cfg
    if cfg.lr_decay_every is not None:
        set_decayed_lr(optimizers, cfg.lr_decay_factor ** (k // cfg.lr_decay_every))
    nb = run.batch("normal")
    ab = run.batch("anomalous") if "anomalous" in run.images else None
    with torch.autocast(device_type=cfg.device.type, dtype=cfg.autocast_dtype, enabled=cfg.uses_amp):
        losses = run.model.train_step(stage, nb, ab, optimizers)
    losses = {n: float(v) for n, v in losses.items()}
    bad = [(n, v) for n, v in losses.items() if not math.isfinite(v)]
    if run.info.enabled and dd.any_rank(bool(bad)) and not bad:  # stop every rank together
        bad = [("(on another rank)", float("nan"))]
    if bad:
        raise NonFiniteLossError(step, stage, bad[0][0], bad[0][1], checkpoint)
    return losses


class _Trainer:
    """The per-stage loop of one fit call, from global step ``step``: :meth:`run_stage` runs a
    stage's steps; after each step it records the losses (``history``, the log, the bar),
    checkpoints when due and evaluates when due (``evaluations``). ``sigint``: the
    :class:`_SignalGuard` that says when Ctrl-C was pressed (or SIGTERM received)."""

    def __init__(self, run: _Run, ckpt: _Checkpointer, log: _JsonlLog, bar, sigint: _SignalGuard, step: int):
        self.run, self.ckpt, self.log, self.bar, self.sigint, self.step = run, ckpt, log, bar, sigint, step
        self._clock = time.monotonic() - run.state.elapsed  # elapsed counts over resumes
        total, done = sum(run.budgets.values()), 0
        self.deadlines = []  # seconds since the start by which each stage must end (time budget)
        for s in run.stages:
            done += run.budgets[s]
            self.deadlines.append(None if run.cfg.time_budget is None or total == 0
                                  else run.cfg.time_budget * done / total)
        self.history: list[dict] = []
        self.evaluations: list[dict] = []

    def run_stage(self, si: int, start: int, opt_state: dict | None) -> None:
        """Stage #``si`` from its step ``start`` (from 0) to its budget, its optimizers loaded
        with ``opt_state`` when given; checkpoints at the end of the stage (also when no step was
        left), every ``checkpoint_every`` global steps and after a Ctrl-C, which then raises
        :class:`TrainingInterrupted` (no evaluation for that step)."""
        run, stage = self.run, self.run.stages[si]
        budget = run.budgets[stage]
        optimizers = _make_optimizers(run.model, stage, opt_state)
        hooks = dd.sync_gradients_on_step(optimizers) if run.info.enabled else []
        try:
            deadline = self.deadlines[si]
            for k in range(start, budget):
                if deadline is not None and self._elapsed() >= deadline:  # its share of the time is used
                    self.ckpt.save(optimizers, stage, si, k, self.step)
                    if self.bar.total is not None:
                        self.bar.total = self.bar.n + sum(run.budgets[s] for s in run.stages[si + 1:])
                    return
                losses = _train_step(run, stage, k, optimizers, self.step + 1, self.ckpt.last)
                self.step += 1
                self._record(stage, losses, optimizers)
                if k + 1 == budget or self.step % run.cfg.checkpoint_every == 0 or self.sigint.requested:
                    self.ckpt.save(optimizers, stage, si, k + 1, self.step)
                if not self.sigint.requested:
                    record = _maybe_evaluate(run, self.step, stage, self.log, self.bar)
                    if record is not None:
                        self.evaluations.append(record)
                if self.sigint.requested:
                    raise TrainingInterrupted(self.step, self.ckpt.last, self.sigint.signum)
            if budget == start:  # resumed exactly at a stage end (or an empty stage)
                self.ckpt.save(optimizers, stage, si, start, self.step)
        finally:
            for h in hooks:
                h.remove()

    def _elapsed(self) -> float:
        """Seconds trained so far (including the runs this one resumes), kept in the state."""
        self.run.state.elapsed = time.monotonic() - self._clock
        return self.run.state.elapsed

    def _record(self, stage: str, losses: dict[str, float], optimizers: dict) -> None:
        """Logging: the step's losses to ``history``, to the log every ``log_every`` steps
        (with each optimizer's learning rate) and to the progress bar."""
        self.history.append({"step": self.step, "stage": stage, "losses": losses})
        if self.log and self.step % self.run.cfg.log_every == 0:
            lrs = {n: o.param_groups[0]["lr"] for n, o in optimizers.items()}
            self.log.write({"step": self.step, "stage": stage, "losses": losses, "lr": lrs})
        self.bar.update(1)
        post = {n: f"{v:.4g}" for n, v in losses.items()}
        if self.run.cfg.time_budget is not None:
            left = max(0.0, self.run.cfg.time_budget - self._elapsed())
            post["time left"] = f"{int(left // 60)}:{int(left % 60):02d}"
        self.bar.set_postfix(post, refresh=False)


def _maybe_evaluate(run: _Run, step: int, stage: str, log: _JsonlLog, bar) -> dict | None:
    """Evaluation: when ``cfg.evaluate`` is due after global step ``step`` (a multiple of
    ``evaluate_every`` or in ``evaluate_at``) run it (:func:`_run_evaluation`), write its numbers
    to the log (an ``"eval"`` line) and, with ``progress`` on rank 0, above the bar; return its
    record, or None when not due."""
    cfg = run.cfg
    if cfg.evaluate is None or not (step in cfg.evaluate_at
                                    or (cfg.evaluate_every and step % cfg.evaluate_every == 0)):
        return None
    record = _run_evaluation(cfg.evaluate, run.model, step, stage)
    numbers = {k: v for k, v in record.items() if k not in ("step", "stage")}
    log.write({"step": step, "stage": stage, "eval": numbers})
    if cfg.progress and run.info.is_main:
        bar.write(f"{run.model.name} step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in numbers.items()))
    return record


def _run_evaluation(evaluate, model, step: int, stage: str) -> dict:
    """Call ``evaluate(model, step)`` in eval mode; return ``{"step", "stage", **its numbers as
    floats}``; restore the training modes, the RNG states and the parameters' .grad (a latent
    search may accumulate into them)."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, None if p.grad is None else p.grad.clone()) for p in model.parameters()]
    rng = rng_state()
    model.eval()
    try:
        out = evaluate(model, step)
    finally:
        for m, mode in modes:
            m.training = mode
        for p, g in grads:
            p.grad = g
        set_rng_state(rng)
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
