"""The Method interface: what every trainable anomaly-detection method offers the training loop,
the detector and the latent search, and the registry of methods.

Contract (all methods)
----------------------
* Public image interfaces take float images in [0, 1], shape (B, C, H, W) with C == channels
  and H == W == image_size. Methods normalise internally (x*2-1 for tanh generators).
* ``image_size`` must be a power of two in [16, 1024]. Non-square or other sizes (MNIST's 28)
  are the data module's job: resize (28 -> 32) or tile before calling a method.
* ``channels`` is 1 or 3.
* ``type(m)(**m.hparams())`` rebuilds a method with the identical state_dict layout.
* ``train_step`` runs one optimisation step of every network of the stage on one batch and
  returns the losses as Python floats. It puts the method in train mode; ``score`` runs in eval
  mode (BatchNorm running statistics, so an image's score does not depend on its batch) and
  restores the previous mode.
* ``score(x, scoring=None, backend=None)`` -> (scores (B,) float32, maps (B, H, W) float32),
  maps in [0, 1] image units: each method owns its scoring (single pass, or latent search
  through :class:`anomgan.scoring.latent.LatentSearchScorer`); the detector only feeds it
  model-size images (tiling, thresholds and files are the detector's).
* All randomness comes from torch's global RNG or from ``torch.Generator`` objects the method
  owns; those are part of the state_dict (``_extra_state``) and of ``get_rng_state()``.

GAN methods also expose ``.generator`` (z (B, z_dim) -> image in [-1, 1]), ``.discriminator``
with ``.features(x)`` -> (B, F), ``.encoder`` (image in [-1, 1] -> z) and ``.z_dim``.

Additions beyond the original interface sketch (see each docstring): ``DEFAULTS`` (the
accepted hyper-parameters and their defaults; unknown ones raise ValueError), ``hp``,
``check_images``, ``to_model``/``to_image``, ``eval_mode()``, ``get_rng_state``/
``set_rng_state``. ``hparams()`` holds image_size, channels and the method's own
hyper-parameters, not the method's name (that is ``type(m).name``).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .._validate import check_channels, check_int
from ..scoring.config import ScoringConfig

USES_ANOMALIES = ("no", "optional", "required")
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 1024
#: upper limit of the size hyper-parameters (``Method.SIZE_HPARAMS``: latent and channel
#: widths), far above any real use: a detector file cannot ask for unbounded memory
MAX_SIZE_HPARAM = 4096


def check_image_size(name: str, image_size) -> int:
    """Validate ``image_size``: an int, a power of two in [MIN_IMAGE_SIZE, MAX_IMAGE_SIZE]."""
    image_size = check_int(name, "image_size", image_size)
    if (image_size < MIN_IMAGE_SIZE or image_size > MAX_IMAGE_SIZE
            or image_size & (image_size - 1)):
        hint = " (resize e.g. 28x28 MNIST to 32x32 first)" if image_size > 0 else ""
        raise ValueError(f"{name}: image_size must be a power of two in [{MIN_IMAGE_SIZE}, "
                         f"{MAX_IMAGE_SIZE}], got {image_size}{hint}")
    return image_size


@contextlib.contextmanager
def frozen_params(*modules: nn.Module):
    """requires_grad False on the modules' parameters inside the block (restored after): a
    loss through a network that must not be trained by it (e.g. D inside G's loss)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


class Method(nn.Module):
    """Base class of the trainable methods. Subclasses set ``name``, ``uses_anomalies`` and
    ``DEFAULTS`` (hyper-parameter name -> default, JSON-able values), build their networks in
    ``__init__`` after ``super().__init__(image_size, channels, **hparams)`` and read their
    hyper-parameters from ``self.hp``.

    The size hyper-parameters named in ``SIZE_HPARAMS`` that a method has (z_dim, width,
    max_width, d_width) must be ints in [1, MAX_SIZE_HPARAM = 4096]; the constructor checks them
    for every method (ValueError/TypeError naming the hyper-parameter)."""

    name: ClassVar[str] = ""
    uses_anomalies: ClassVar[str] = "no"
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    SIZE_HPARAMS: ClassVar[tuple[str, ...]] = ("z_dim", "width", "max_width", "d_width")
    #: True when ``score`` is one forward pass of the networks (no latent search): such a
    #: method can be compiled (``Detector.compile``, :mod:`anomgan.scoring.compiled`)
    single_pass: ClassVar[bool] = False

    def __init__(self, image_size: int, channels: int, **hparams):
        super().__init__()
        cls = type(self).__name__
        self.image_size = check_image_size(cls, image_size)
        self.channels = check_channels(cls, channels)
        unknown = sorted(set(hparams) - set(self.DEFAULTS))
        if unknown:
            raise ValueError(f"{cls}: unknown hyper-parameter(s) {unknown}; accepted: "
                             f"{sorted(self.DEFAULTS)}")
        hp = dict(self.DEFAULTS)
        hp.update(hparams)
        for k in self.SIZE_HPARAMS:
            if k in hp:
                check_int(cls, k, hp[k], minimum=1, maximum=MAX_SIZE_HPARAM)
        self.hp: dict[str, Any] = hp

    #: hyper-parameters added after files were written, with the value that reproduces what
    #: those older files were trained with (used by :meth:`from_stored`)
    LEGACY_DEFAULTS: ClassVar[dict[str, Any]] = {}

    @classmethod
    def stored_hparams(cls, hparams: dict) -> dict:
        """The ``hparams()`` a file stored, with the keys the file predates at their
        ``LEGACY_DEFAULTS`` value (what that file was trained with)."""
        return {**cls.LEGACY_DEFAULTS, **hparams}

    @classmethod
    def from_stored(cls, hparams: dict) -> "Method":
        """Rebuild a method from the ``hparams()`` a file stored (:meth:`stored_hparams`), so old
        detectors keep their architecture."""
        return cls(**cls.stored_hparams(hparams))

    # ---- interface -------------------------------------------------------------------------
    def hparams(self) -> dict:
        """JSON-able dict; ``type(self)(**self.hparams())`` rebuilds this method."""
        return {"image_size": self.image_size, "channels": self.channels, **dict(self.hp)}

    def stages(self) -> list[str]:
        """Training stages in order; the loop runs each for its own number of steps."""
        return ["main"]

    def make_optimizers(self, stage: str) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, stage: str, normal: Tensor, anomalous: Tensor | None,
                   optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        raise NotImplementedError

    def score(self, x: Tensor, scoring: ScoringConfig | None = None, *,
              backend: str | None = None) -> tuple[Tensor, Tensor]:
        """(scores (B,) float32, maps (B, H, W) float32 in [0, 1] image units) of images x
        (B, channels, image_size, image_size) in [0, 1]: the method's own score.
        ``scoring`` (None: ``ScoringConfig()``) carries the settings a method may use (the
        latent search's); ``backend`` names the kernel backend of the fused ops. Runs in eval
        mode and restores the previous mode; a score never depends on the rest of the batch."""
        raise NotImplementedError

    # ---- helpers shared by the methods -----------------------------------------------------
    def check_stage(self, stage: str) -> None:
        if stage not in self.stages():
            raise ValueError(f"{type(self).__name__}: unknown stage {stage!r}; stages are "
                             f"{self.stages()}")

    def check_images(self, name: str, x, allow_none: bool = False) -> None:
        """Raise TypeError/ValueError unless x is a float (B, channels, image_size, image_size)
        tensor with B >= 1 (values are not checked against [0, 1])."""
        cls = type(self).__name__
        if x is None and allow_none:
            return
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{cls}: {name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{cls}: {name} must be a float tensor in [0, 1], got {x.dtype}")
        want = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want or x.shape[0] < 1:
            raise ValueError(f"{cls}: {name} must have shape (B>=1, {want[0]}, {want[1]}, "
                             f"{want[2]}), got {tuple(x.shape)}")

    def check_uses_anomalies(self, anomalous) -> None:
        if self.uses_anomalies == "required" and anomalous is None:
            raise ValueError(f"{type(self).__name__} ({self.name}) needs anomalous images "
                             "(uses_anomalies='required'), got anomalous=None")
        if self.uses_anomalies == "no" and anomalous is not None:
            raise ValueError(f"{type(self).__name__} ({self.name}) does not use anomalous "
                             "images (uses_anomalies='no'); pass anomalous=None")

    def _param_device_dtype(self):
        p = next(self.parameters())
        return p.device, p.dtype

    def to_model(self, x: Tensor) -> Tensor:
        """[0, 1] images -> the networks' [-1, 1] range, on the parameters' device/dtype."""
        device, dtype = self._param_device_dtype()
        return x.to(device=device, dtype=dtype) * 2 - 1

    @staticmethod
    def to_image(y: Tensor) -> Tensor:
        """[-1, 1] network output -> [0, 1] image units."""
        return (y + 1) / 2

    @contextlib.contextmanager
    def eval_mode(self):
        """Eval mode inside the block, the previous mode restored after it."""
        if not any(m.training for m in self.modules()):  # already eval throughout (an inference
            yield  # copy, a loaded detector): switching costs ~0.2 ms of Python a detect call
            return
        was = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was)

    def get_rng_state(self) -> dict[str, Tensor]:
        """States of the torch.Generators this method owns (name -> uint8 tensor); {} if none."""
        return {}

    def set_rng_state(self, state: dict[str, Tensor]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} owns no random generators, got state for "
                             f"{sorted(state)}")


def adam(params, lr: float, beta1: float, beta2: float = 0.999) -> torch.optim.Adam:
    return torch.optim.Adam(list(params), lr=lr, betas=(beta1, beta2))


def optimizer_step(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    """One update of ``optimizer``'s parameters on ``loss``: zero their gradients, backward,
    step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def log2_int(n: int) -> int:
    k = int(round(math.log2(n)))
    if 2 ** k != n:
        raise ValueError(f"{n} is not a power of two")
    return k


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add ``cls`` to METHODS under ``cls.name``."""
    if not cls.name or cls.uses_anomalies not in USES_ANOMALIES:
        raise ValueError(f"{cls.__name__}: bad name {cls.name!r} or uses_anomalies "
                         f"{cls.uses_anomalies!r}")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The Method class registered as ``name``; ValueError listing the known names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"get_method: name must be a str, got {type(name).__name__}")
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(METHODS)}") from None
