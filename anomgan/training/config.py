"""fit's settings in one validated, frozen object, and how they are stored in a checkpoint.

:class:`FitConfig` is built once by :func:`anomgan.training.fit` from its arguments; building it
validates every argument (TypeError for a wrong type, ValueError for a value out of range, both
naming the argument, see :mod:`anomgan._validate`) and normalises them (``anomaly_batch_size``
defaults to ``batch_size``, ``augment`` becomes an :class:`~anomgan.data.Augment` or None,
``evaluate_at`` a frozenset of steps, paths become ``str``). What needs the data or the built
method (the method itself, image channels, the stage budgets) is checked at set-up.

:meth:`FitConfig.checkpoint_config` is the JSON ``config`` written into every checkpoint (the keys
of the first checkpoint format plus ``input_mode``, which older checkpoints lack and which then
reads as "resize", ``RESUME_KEY_LEGACY``); :func:`check_resumable` compares a checkpoint's
``config`` with the current run's before a resume.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any, Callable, Iterable, Mapping

import torch

from .._validate import check_choice, check_int, check_real
from ..data import Augment
from ..data.ingest import INPUT_MODES

ANOMALY_SAMPLERS = ("kmeans", "random")
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
AMP_DTYPES = ("bfloat16", "float16")
# the stored settings a resume must match exactly (the data only warns: see check_resumable)
RESUME_KEYS = ("method", "hparams", "image_size", "channels", "batch_size", "anomaly_batch_size", "seed",
               "anomaly_sampler", "augment", "lr_decay", "input_mode")
#: values of RESUME_KEYS that checkpoints written before the key existed were trained with
RESUME_KEY_LEGACY = {"input_mode": "resize"}


def parse_duration(where: str, name: str, v) -> float | None:
    """Seconds from a number of seconds or a string "90s", "20m", "1.5h" (a bare number string
    is seconds); None stays None. TypeError / ValueError naming ``name`` otherwise; > 0."""
    if v is None:
        return None
    if isinstance(v, str):
        text = v.strip().lower()
        unit = _DURATION_UNITS.get(text[-1:], None)
        number = text[:-1] if unit is not None else text
        try:
            seconds = float(number) * (unit or 1.0)
        except ValueError:
            raise ValueError(f"{where}: {name} must be seconds or a duration like '90s', '20m', "
                             f"'1.5h'; got {v!r}") from None
        return check_real(where, name, seconds, 0, None, lo_open=True)
    return check_real(where, name, v, 0, None, lo_open=True)


def check_budget_args(where: str, steps, epochs, stage_steps) -> tuple[int | None, int | None, dict | None]:
    """The step-budget arguments on their own (types, ranges, not both steps and epochs),
    returned normalised; :func:`stage_budgets` checks them against the method's stages."""
    if stage_steps is not None:
        stage_steps = {k: check_int(where, f"stage_steps[{k!r}]", v, minimum=0) for k, v in dict(stage_steps).items()}
    if steps is not None and epochs is not None:
        raise ValueError(f"{where}: give steps or epochs, not both")
    return (check_int(where, "steps", steps, minimum=1, allow_none=True),
            check_int(where, "epochs", epochs, minimum=1, allow_none=True), stage_steps)


def stage_budgets(stages: list[str], steps: int | None, epochs: int | None, steps_per_epoch: int,
                  stage_steps: dict[str, int] | None) -> dict[str, int]:
    """Steps per stage (see :mod:`anomgan.training.loop`). Raises TypeError / ValueError on bad
    or contradictory budgets."""
    fixed = dict(stage_steps or {})
    unknown = sorted(set(fixed) - set(stages))
    if unknown:
        raise ValueError(f"stage_steps: unknown stage(s) {unknown}; the method's stages are {stages}")
    steps, epochs, fixed = check_budget_args("stage_budgets", steps, epochs, fixed)
    free = [s for s in stages if s not in fixed]
    if epochs is not None:
        return {s: fixed.get(s, epochs * steps_per_epoch) for s in stages}
    if steps is None:
        if free:
            raise ValueError(f"give steps or epochs (or stage_steps for every stage of {stages})")
        return {s: fixed[s] for s in stages}
    left = steps - sum(fixed.values())
    if left < 0 or (free and left < len(free)):
        raise ValueError(f"steps={steps} cannot cover stage_steps={fixed} plus >= 1 step for each of {free}")
    out = dict(fixed)
    for i, s in enumerate(free):
        out[s] = left // len(free) + (1 if i < left % len(free) else 0)
    return {s: out[s] for s in stages}


def _check_evaluation(evaluate, evaluate_every, evaluate_at) -> frozenset[int]:
    """The validated ``evaluate_at`` steps (fit's evaluation arguments; ValueError/TypeError)."""
    if evaluate is not None and not callable(evaluate):
        raise TypeError("fit: evaluate must be a callable evaluate(method, step) -> dict, "
                        f"got {type(evaluate).__name__}")
    check_int("fit", "evaluate_every", evaluate_every, minimum=1, allow_none=True)
    steps = [check_int("fit", f"evaluate_at[{i}]", s, minimum=1) for i, s in enumerate(evaluate_at or ())]
    if evaluate is None and (evaluate_every is not None or steps):
        raise ValueError("fit: evaluate_every / evaluate_at given without evaluate=")
    return frozenset(steps)


def _fspath(v) -> str | None:
    return None if v is None else os.fspath(v)


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """The arguments of :func:`anomgan.training.fit` except the images (``normal``,
    ``anomalous``, ``anomaly_labels``), validated and normalised on construction; see fit's
    docstring for what each one means. ``hparams``: the method's constructor arguments."""
    method: Any = "noisy-gan"
    image_size: int | None = None
    channels: int | None = None
    steps: int | None = None
    epochs: int | None = None
    stage_steps: Mapping[str, int] | None = None
    batch_size: int = 64
    anomaly_batch_size: int | None = None
    anomaly_sampler: str = "kmeans"
    kmeans_clusters: int = 10
    augment: Augment | dict | None = None
    seed: int = 0
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int = 1000
    resume: str | os.PathLike | None = None
    log_path: str | os.PathLike | None = None
    log_every: int = 1
    progress: bool = True
    device: str | torch.device = "cpu"
    amp: bool = False
    amp_dtype: str = "bfloat16"
    compile: bool | str = False
    sync_batchnorm: bool = False
    lr_decay_every: int | None = None
    lr_decay_factor: float = 0.5
    evaluate: Callable[[Any, int], Mapping[str, float] | None] | None = None
    evaluate_every: int | None = None
    evaluate_at: Iterable[int] | None = None
    input_mode: str = "resize"
    time_budget: float | str | None = None
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        w, norm = "fit", {}
        check_choice(w, "anomaly_sampler", self.anomaly_sampler, ANOMALY_SAMPLERS)
        check_choice(w, "amp_dtype", self.amp_dtype, AMP_DTYPES)
        check_choice(w, "input_mode", self.input_mode, INPUT_MODES)
        norm["time_budget"] = parse_duration(w, "time_budget", self.time_budget)
        if self.input_mode == "tile" and self.image_size is None:
            raise ValueError("fit: input_mode='tile' needs image_size= (the tile size the model is built for)")
        norm["steps"], norm["epochs"], norm["stage_steps"] = check_budget_args(w, self.steps, self.epochs,
                                                                              self.stage_steps)
        norm["image_size"] = check_int(w, "image_size", self.image_size, minimum=1, allow_none=True)
        for name in ("batch_size", "checkpoint_every", "log_every", "kmeans_clusters"):
            norm[name] = check_int(w, name, getattr(self, name), minimum=1)
        anomaly_bs = self.batch_size if self.anomaly_batch_size is None else self.anomaly_batch_size
        norm["anomaly_batch_size"] = check_int(w, "anomaly_batch_size", anomaly_bs, minimum=1)
        norm["seed"] = check_int(w, "seed", self.seed)
        norm["lr_decay_every"] = check_int(w, "lr_decay_every", self.lr_decay_every, minimum=1, allow_none=True)
        norm["lr_decay_factor"] = check_real(w, "lr_decay_factor", self.lr_decay_factor, 0, 1, lo_open=True)
        norm["evaluate_at"] = _check_evaluation(self.evaluate, self.evaluate_every, self.evaluate_at)
        norm["augment"] = Augment.from_config(self.augment)
        norm["device"] = torch.device(self.device)
        norm["hparams"] = dict(self.hparams)
        for name in ("checkpoint_dir", "resume", "log_path"):
            norm[name] = _fspath(getattr(self, name))
        for name, v in norm.items():
            object.__setattr__(self, name, v)

    @property
    def uses_amp(self) -> bool:
        """AMP is asked for and acts (CUDA only)."""
        return bool(self.amp) and self.device.type == "cuda"

    @property
    def autocast_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.amp_dtype == "bfloat16" else torch.float16

    def checkpoint_config(self, model, budgets: dict[str, int], world_size: int, normal: torch.Tensor,
                          anomalous: torch.Tensor | None) -> dict:
        """The JSON ``config`` of the checkpoints of a run of this config on ``normal`` /
        ``anomalous`` with the built ``model`` (the stored image_size and channels are the
        model's). ``data`` holds each image set's shape and sum, to notice other images on resume."""
        aug = self.augment
        return {"method": model.name, "hparams": model.hparams(), "image_size": model.image_size,
                "channels": model.channels, "batch_size": self.batch_size,
                "anomaly_batch_size": self.anomaly_batch_size, "seed": self.seed, "budgets": budgets,
                "anomaly_sampler": self.anomaly_sampler if anomalous is not None else None,
                "kmeans_clusters": self.kmeans_clusters, "augment": aug.config() if aug else None,
                "lr_decay": [self.lr_decay_every, self.lr_decay_factor] if self.lr_decay_every else None,
                "world_size": world_size, "input_mode": self.input_mode,
                "data": {"normal": _fingerprint(normal), "anomalous": _fingerprint(anomalous)}}


def _fingerprint(x: torch.Tensor | None) -> list | None:
    return [*x.shape, float(x.double().sum())] if x is not None else None


def _json_norm(v: Any) -> Any:
    return json.loads(json.dumps(v))


def check_resumable(stored: Mapping, current: Mapping, method_cls: type, *, stacklevel: int = 2) -> None:
    """Refuse (ValueError naming the key) to resume a checkpoint whose ``config`` (``stored``)
    differs from this run's (``current``, both :meth:`FitConfig.checkpoint_config` dicts) in a
    :data:`RESUME_KEYS` setting; hparams the checkpoint predates count at their legacy values
    (``method_cls.stored_hparams``). Other images only warn (UserWarning): the batch order then
    does not continue the original run's."""
    old = dict(stored)
    for key, legacy in RESUME_KEY_LEGACY.items():
        old.setdefault(key, legacy)
    if isinstance(old.get("hparams"), dict):  # keys the checkpoint predates: their old values
        old["hparams"] = method_cls.stored_hparams(old["hparams"])
    for key in RESUME_KEYS:
        if _json_norm(old.get(key)) != _json_norm(current[key]):
            raise ValueError(f"resume: the checkpoint was trained with {key}={old.get(key)!r}, "
                             f"this call has {key}={current[key]!r}")
    if _json_norm(old.get("data")) != _json_norm(current["data"]):
        warnings.warn(f"resume: the images differ from those the checkpoint was trained on "
                      f"(shape and sum {old.get('data')} vs {current['data']}); the batch order will not "
                      "continue the original run", UserWarning, stacklevel=stacklevel + 1)


def _budget_args(cfg: "FitConfig") -> str:
    parts = [f"{k}={getattr(cfg, k)!r}" for k in ("steps", "epochs") if getattr(cfg, k) is not None]
    if cfg.stage_steps:
        parts.append(f"stage_steps={dict(cfg.stage_steps)!r}")
    return ", ".join(parts) or "no budget"


def check_resume_budget(cfg: "FitConfig", stages: list[str], budgets: Mapping[str, int], pos,
                        stored_budgets: Mapping[str, int] | None) -> None:
    """Refuse (ValueError) to resume ``cfg.resume`` at ``pos`` (stage_index, stage_step, step:
    the checkpoint's position) with stage ``budgets`` that ask for less than it already ran: fewer
    steps in total than its global step, fewer for its stage than its step in that stage, or, for
    a finished earlier stage, fewer than that stage ran (``stored_budgets``, the checkpoint's).
    A finished stage given more steps than it ran only warns: it is not trained further."""
    what = f"resume: the checkpoint {cfg.resume} has already run {pos.step} step(s)"
    fix = "; or start a fresh run without resume (--resume)"
    total = sum(budgets.values())
    if pos.step > total:
        raise ValueError(f"{what}, but this call's budget ({_budget_args(cfg)}) is {total} step(s) in total; "
                         f"give steps >= {pos.step} (--steps {pos.step} or more) to continue training{fix}")
    stage = stages[pos.stage_index]
    if pos.stage_step > budgets[stage]:
        raise ValueError(f"{what}, {pos.stage_step} of them in stage {stage!r}, but this call's budget "
                         f"({_budget_args(cfg)}) gives that stage {budgets[stage]} step(s); give a budget "
                         f"of >= {pos.stage_step} step(s) for stage {stage!r}{fix}")
    for s in stages[:pos.stage_index]:
        ran = (stored_budgets or {}).get(s)
        if not isinstance(ran, int) or ran == budgets[s]:
            continue
        if ran > budgets[s]:
            raise ValueError(f"{what}, {ran} of them in the finished stage {s!r}, but this call's budget "
                             f"({_budget_args(cfg)}) gives that stage {budgets[s]} step(s); give a budget of "
                             f">= {ran} step(s) for stage {s!r}{fix}")
        warnings.warn(f"resume: stage {s!r} already finished after {ran} step(s) in the checkpoint; the "
                      f"{budgets[s]} step(s) this call gives it are not run", UserWarning, stacklevel=5)
