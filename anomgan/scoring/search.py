"""Batched AnoGAN latent search: for each query image x find z so that G(z) is the closest
"normal" image (Schlegl et al., 2017; docs/METHODS.md §1).

    L(z) = (1 - λ) · Σ |x - G(z)| + λ · Σ |f(x) - f(G(z))|        (reduction="sum", the paper;
                                                                   "mean" averages each term)

with G the generator and f the discriminator's intermediate feature layer, both frozen: only z
moves, by per-sample Adam steps. Every image of the batch (and every restart of every image)
searches at once; each sample's loss, gradient, Adam state, learning rate and stopping rule are
its own, so a sample's result does not depend on the others in the batch.

Per step: G(z) and f(G(z)) forward, the fused loss (anomgan.ops.residual_fm_loss: its backward
gives sign-based gradients to G(z) and f(G(z))), the backward through G's and f's own autograd
to z only (no parameter gradient is computed or kept: the networks are frozen copies, see
anomgan.scoring.frozen.prepare_frozen), and the fused in-place Adam step (anomgan.ops.adam_step_).

On CUDA tensors one iteration is captured in a CUDA graph after a few eager warm-up iterations
and replayed (static buffers, Adam state and learning rate on the device, no host sync inside
an iteration); if the capture fails the search goes on eagerly and says so once on the
"anomgan" logger. The eager path runs the very same iteration function.

``compute_dtype`` (e.g. torch.bfloat16): the forward and backward passes of G and f run under
``torch.autocast`` in that dtype during the search (the loss, z, its gradient and the Adam
state stay in x's dtype, and the queries' features f(x) are computed the same way, so G(z) = x
still means a zero loss); the returned loss and G(z) are recomputed at the final z in x's dtype
without autocast, so a score is always a full-precision L(z*). On a CPU with native bfloat16
instructions (avx512_bf16 or AMX, :func:`cpu_has_native_bf16`) a step is about 1.8x faster than
in float32 (3.3x the plain PyTorch loop; benchmarks/RESULTS.md); the detector chooses it there
(``ScoringConfig``'s ``search_precision="auto"``).

``steps=0`` runs no Adam step: the result is the start itself (the best restart by its loss),
e.g. the f-AnoGAN encoder's E(x) scored with the AnoGAN loss.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch
from torch import nn

from .. import ops
from .._validate import check_choice, check_int, check_real
from .frozen import is_frozen, prepare_frozen

__all__ = [
    "plain_search_loop",
    "ANOGAN_STEPS", "ANOGAN_LR_SCHEDULE", "ANOGAN_LAMBDA", "DEFAULT_REDUCTION", "REDUCTIONS",
    "SearchResult", "latent_search", "latent_loss_and_grad", "lr_table", "scaled_schedule",
    "prepare_frozen", "cpu_has_native_bf16", "COMPUTE_DTYPES",
]

log = logging.getLogger("anomgan")

#: AnoGAN as published: 500 Adam steps (β = (0.9, 0.999)), λ = 0.1, L1 feature matching, and
#: the learning rate 0.01, then 0.001 from step 200 and 0.0005 from step 300.
ANOGAN_STEPS = 500
ANOGAN_LAMBDA = 0.1
ANOGAN_LR_SCHEDULE = ((0, 1e-2), (200, 1e-3), (300, 5e-4))
#: the loss reduction per sample: "sum" over pixels and features (as published) or "mean"
#: (each term averaged, so scores compare across image sizes). The detector and this module's
#: functions default to "mean"; pass reduction="sum" for the published units.
REDUCTIONS = ("mean", "sum")
DEFAULT_REDUCTION = "mean"

LRSpec = Union[float, Sequence[Sequence[float]], Callable[[int], float]]

_EAGER_WARNED = False
_CUDA_WARMUP = 3          # eager iterations before the capture (they are real iterations)
_CUDA_CHECK_EVERY = 50    # with tol on CUDA: host check "all samples stopped?" this often
_PROBE = "latent_search"
#: the dtypes G and f may run in during a search (``compute_dtype``; None = x's own)
COMPUTE_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU has bfloat16 dot-product instructions (x86 avx512_bf16 or AMX-BF16)
    that oneDNN uses for bfloat16 convolutions; False where that cannot be told."""
    try:
        caps = torch.cpu.get_capabilities()
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    except Exception:  # noqa: BLE001 - an older torch, another architecture: no claim
        return False


def _autocast(device: torch.device, compute_dtype):
    if compute_dtype is None:
        return contextlib.nullcontext()
    # no weight-cast cache: the same code runs inside a CUDA graph capture
    return torch.autocast(device_type=device.type, dtype=compute_dtype, cache_enabled=False)


@dataclass(frozen=True)
class SearchResult:
    """What :func:`latent_search` found, one row per query image.

    z           : (B, z_dim) the latent of the best restart, x's dtype.
    recon       : (B, *image shape) G(z), in G's output range.
    loss        : (B,) L(z) at the returned z (x's dtype, float32 for half inputs), in the
                  units of the chosen reduction: the AnoGAN anomaly score.
    steps_taken : (B,) int64 Adam steps the returned z took (< steps where tol stopped it).
    restart     : (B,) int64 index of the restart that won (0 when restarts == 1).
    loss_history: (steps, B) the winning restart's loss at each iteration's z (before that
                  iteration's Adam step; frozen rows repeat), when ``record_loss=True``; else
                  None.
    """
    z: torch.Tensor
    recon: torch.Tensor
    loss: torch.Tensor
    steps_taken: torch.Tensor
    restart: torch.Tensor
    loss_history: torch.Tensor | None = None


# ----------------------------------------------------------------------------- validation
def _err(msg: str) -> ValueError:
    return ValueError(f"{_PROBE}: {msg}")


def lr_table(lr: LRSpec, steps: int) -> list[float]:
    """The learning rate of each of ``steps`` iterations.

    lr : a positive number (constant); a schedule of ``(first_step, lr)`` pairs, the first at
         step 0, strictly increasing steps, each lr holding until the next pair (the default
         :data:`ANOGAN_LR_SCHEDULE`); or a callable ``step -> lr`` (step 0-based).
    """
    if isinstance(lr, bool):
        raise TypeError(f"{_PROBE}: lr must be a number, a schedule of (step, lr) pairs or a "
                        f"callable, got {lr!r}")
    if isinstance(lr, (int, float)):
        table = [float(lr)] * steps
    elif callable(lr):
        table = [lr(i) for i in range(steps)]
    elif isinstance(lr, (list, tuple)):
        pairs = []
        for p in lr:
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise TypeError(f"{_PROBE}: an lr schedule is a sequence of (first_step, lr) "
                                f"pairs, got the item {p!r}")
            s, v = p
            pairs.append((check_int(_PROBE, "an lr schedule step", s), v))
        if not pairs or pairs[0][0] != 0:
            raise _err(f"an lr schedule must start at step 0, got {lr!r}")
        if any(b[0] <= a[0] for a, b in zip(pairs, pairs[1:])):
            raise _err(f"lr schedule steps must strictly increase, got {lr!r}")
        table, j = [], 0
        for i in range(steps):
            while j + 1 < len(pairs) and pairs[j + 1][0] <= i:
                j += 1
            table.append(pairs[j][1])
    else:
        raise TypeError(f"{_PROBE}: lr must be a number, a schedule of (step, lr) pairs or a "
                        f"callable, got {type(lr).__name__}")
    return [check_real(_PROBE, f"the learning rate at step {i}", v, 0.0, lo_open=True)
            for i, v in enumerate(table)]


def scaled_schedule(steps: int, schedule=ANOGAN_LR_SCHEDULE, length: int = ANOGAN_STEPS):
    """``schedule`` (``(first_step, lr)`` pairs written for ``length`` steps) with its step
    boundaries scaled to ``steps``; when two boundaries round to one step the later pair wins."""
    scale = steps / length
    by_step = {int(round(s * scale)): v for s, v in schedule}
    return tuple(sorted(by_step.items()))


def _z_dim(generator, z0, z_dim) -> int:
    if z0 is not None:
        return int(z0.shape[-1])
    if z_dim is None:
        z_dim = getattr(generator, "z_dim", None)
    if z_dim is None:
        raise _err("cannot tell the latent size: pass z0, or z_dim=, or give the generator a "
                   "z_dim attribute")
    return check_int(_PROBE, "z_dim", z_dim, minimum=1)


def _freeze(net, what: str):
    """A frozen eval-mode copy of a module / of a module's bound method; a plain callable as is."""
    if isinstance(net, nn.Module):
        return net if is_frozen(net) else prepare_frozen(net)
    owner = getattr(net, "__self__", None)
    if isinstance(owner, nn.Module):
        if is_frozen(owner):
            return net
        return getattr(prepare_frozen(owner), net.__name__)
    if not callable(net):
        raise TypeError(f"{_PROBE}: {what} must be callable (a module or a function), got "
                        f"{type(net).__name__}")
    return net


# ----------------------------------------------------------------------------- the step
def latent_loss_and_grad(generator, features, x, fx, z, *, lam=ANOGAN_LAMBDA,
                         reduction=DEFAULT_REDUCTION, backend=None, compute_dtype=None):
    """Per-sample loss L(z) (N,) and its gradient dL/dz (N, z_dim), exactly as the search
    computes them: the fused loss op, then autograd through ``generator`` and ``features``
    to z only. ``fx`` = features(x), computed once by the caller. ``compute_dtype``: run G
    and f under autocast in that dtype (module doc); the loss is taken in x's dtype."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        with _autocast(z.device, compute_dtype):
            gz = generator(z)
            fgz = features(gz)
        if compute_dtype is not None:
            gz, fgz = gz.to(x.dtype), fgz.to(fx.dtype)
        loss = ops.residual_fm_loss(x, gz, fx, fgz, lam=lam, reduction=reduction, backend=backend)
        (grad,) = torch.autograd.grad(loss.sum(), z)
    return loss.detach(), grad


class _Search:
    """The static buffers of one batched search and the one iteration that updates them."""

    def __init__(self, generator, features, x, fx, z, *, lam, reduction, betas, eps, tol,
                 patience, backend, lr0, record_steps=None, compute_dtype=None):
        self.G, self.F, self.x, self.fx = generator, features, x, fx
        self.lam, self.reduction, self.betas, self.eps = lam, reduction, betas, eps
        self.tol, self.patience, self.backend = tol, patience, backend
        self.compute_dtype = compute_dtype
        n, dev = z.shape[0], z.device
        self.z = z.clone()
        self.exp_avg = torch.zeros_like(self.z)
        self.exp_avg_sq = torch.zeros_like(self.z)
        self.step = torch.zeros(n, dtype=torch.int64, device=dev)
        self.active = torch.ones(n, dtype=torch.bool, device=dev)
        ldt = torch.float64 if z.dtype == torch.float64 else torch.float32
        self.loss = torch.full((n,), math.inf, dtype=ldt, device=dev)
        self.calm = torch.zeros(n, dtype=torch.int64, device=dev)
        self.history = (torch.full((record_steps, n), math.nan, dtype=ldt, device=dev)
                        if record_steps is not None else None)
        # the learning rate lives on the device for a graph (a Python float would be baked in)
        self.lr = torch.full((n,), lr0, dtype=torch.float32, device=dev) if dev.type == "cuda" else lr0

    def set_lr(self, value: float) -> None:
        if isinstance(self.lr, torch.Tensor):
            self.lr.fill_(value)  # a device fill: no host sync
        else:
            self.lr = value

    def iteration(self) -> None:
        loss, grad = latent_loss_and_grad(self.G, self.F, self.x, self.fx, self.z, lam=self.lam,
                                          reduction=self.reduction, backend=self.backend,
                                          compute_dtype=self.compute_dtype)
        loss = loss.to(self.loss.dtype)
        if self.tol is not None:
            prev = self.loss
            change = (prev - loss).abs() / loss.abs().clamp_min(1e-30)
            calm_now = torch.isfinite(prev) & (change < self.tol) & self.active
            self.calm.copy_(torch.where(calm_now, self.calm + 1, torch.zeros_like(self.calm)))
            # a sample whose loss stayed still for `patience` steps stops before this step
            self.active.logical_and_(self.calm < self.patience)
        self.loss.copy_(loss)  # a stopped sample's z no longer moves: nor does its loss
        ops.adam_step_(self.z, grad, self.exp_avg, self.exp_avg_sq, self.step, self.active,
                       lr=self.lr, betas=self.betas, eps=self.eps, backend=self.backend)

    def record(self, i: int) -> None:
        if self.history is not None:
            self.history[i].copy_(self.loss)  # device copy, no sync

    def fill_history(self, last: int) -> None:
        """Rows after an early stop of every sample: the loss no longer changes."""
        if self.history is not None and last + 1 < self.history.shape[0]:
            self.history[last + 1:].copy_(self.loss.expand_as(self.history[last + 1:]))

    def run_eager(self, lrs: list[float], start: int) -> None:
        for i in range(start, len(lrs)):
            if lrs[i] != (lrs[i - 1] if i else None):
                self.set_lr(lrs[i])
            self.iteration()
            self.record(i)
            if self.tol is not None and not bool(self.active.any()):
                self.fill_history(i)
                return

    def run_cuda_graph(self, lrs: list[float]) -> None:
        global _EAGER_WARNED
        warm = min(_CUDA_WARMUP, len(lrs))
        side = torch.cuda.Stream(device=self.z.device)
        side.wait_stream(torch.cuda.current_stream(self.z.device))
        with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
            for i in range(warm):
                self.set_lr(lrs[i])
                self.iteration()
                self.record(i)
        torch.cuda.current_stream(self.z.device).wait_stream(side)
        if warm == len(lrs):
            return
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.iteration()
        except Exception as exc:  # noqa: BLE001 - any capture failure means: go on eagerly
            if not _EAGER_WARNED:
                _EAGER_WARNED = True
                log.warning("latent_search: CUDA graph capture failed (%s: %s); the search runs "
                            "eagerly", type(exc).__name__, exc)
            # capture records kernels without running them: the state is as after warm-up
            self.run_eager(lrs, warm)
            return
        for i in range(warm, len(lrs)):
            if lrs[i] != lrs[i - 1]:
                self.set_lr(lrs[i])
            graph.replay()
            self.record(i)
            if (self.tol is not None and (i + 1 - warm) % _CUDA_CHECK_EVERY == 0
                    and not bool(self.active.any())):
                self.fill_history(i)
                break


# ----------------------------------------------------------------------------- the search
def latent_search(generator, features, x: torch.Tensor, *, steps: int = ANOGAN_STEPS,
                  lr: LRSpec = ANOGAN_LR_SCHEDULE, lam: float = ANOGAN_LAMBDA,
                  z0: torch.Tensor | None = None, restarts: int = 1, tol: float | None = None,
                  patience: int = 5, seed: int | None = None, backend: str | None = None,
                  reduction: str = DEFAULT_REDUCTION, betas=(0.9, 0.999), eps: float = 1e-8,
                  z_dim: int | None = None, freeze: bool = True, graph: bool = True,
                  record_loss: bool = False, compute_dtype: torch.dtype | None = None
                  ) -> SearchResult:
    """Search, for every image of ``x`` at once, the latent z minimising the AnoGAN loss.

    generator : z (N, z_dim) -> images (N, *x.shape[1:]); an nn.Module, or any callable.
    features  : images -> features (N, ...): the discriminator's intermediate layer, e.g.
                ``D.features`` (a bound method of a module), a module, or any callable.
                Modules and modules' bound methods are replaced by frozen eval-mode copies
                (:func:`anomgan.scoring.frozen.prepare_frozen`, BatchNorm folded, no parameter
                gradients) unless already frozen or ``freeze=False``; the caller's networks are
                never modified. A plain callable is used as given.
    x         : (B, C, H, W) query images IN G'S OUTPUT RANGE: the caller maps [0, 1] images
                there (x * 2 - 1 for a tanh generator). Float dtype.
    steps     : Adam iterations (int >= 0); 500 as published. 0: no step, the starts are
                scored as they are (the best restart wins).
    lr        : the learning-rate schedule (see :func:`lr_table`): a number, (step, lr) pairs,
                or a callable step -> lr. Default: AnoGAN's 0.01, 0.001 from step 200, 0.0005
                from step 300.
    lam       : λ in [0, 1], the weight of the feature-matching term (0.1 as published).
    z0        : start latents: (B, z_dim) (restart 0 starts there, other restarts from random
                draws) or (B, restarts, z_dim); e.g. an encoder's E(x) for an f-AnoGAN warm
                start. None: every restart starts from N(0, I) draws.
    restarts  : starts per image (int >= 1); all run in one batch, the lowest final loss wins.
    tol       : None (run all steps) or > 0: a sample stops (its ``active`` flag drops, its z
                and Adam state stay unchanged from then on) once its relative loss change
                |L_t - L_{t-1}| / |L_t| stays under tol for ``patience`` consecutive steps.
    seed      : seeds the random starts (a private torch.Generator): same seed, same result.
    backend   : the kernel backend of the fused ops (see anomgan.ops).
    reduction : "mean" (each term averaged per sample; :data:`DEFAULT_REDUCTION`) or "sum" (as
                published) for the loss.
    betas,eps : Adam's.
    z_dim     : the latent size when neither z0 nor ``generator.z_dim`` gives it.
    graph     : on CUDA, capture one iteration in a CUDA graph and replay it (True).
    record_loss: also return each iteration's loss (``SearchResult.loss_history``).
    compute_dtype: None (G and f run in x's dtype) or a dtype of :data:`COMPUTE_DTYPES` that
                G and f run in under ``torch.autocast`` during the search (module doc; e.g.
                torch.bfloat16 on a CPU with :func:`cpu_has_native_bf16`). The returned loss
                and recon are recomputed in x's dtype, without autocast.

    Returns a :class:`SearchResult` with, per image, the best restart's z, G(z), L(z) at that
    z, and its step count. Runs under no parameter gradients; memory stays flat over the steps.
    """
    with torch.inference_mode(False):  # autograd to z must work even under inference_mode
        return _latent_search(generator, features, x, steps=steps, lr=lr, lam=lam, z0=z0,
                              restarts=restarts, tol=tol, patience=patience, seed=seed,
                              backend=backend, reduction=reduction, betas=betas, eps=eps,
                              z_dim=z_dim, freeze=freeze, graph=graph, record_loss=record_loss,
                              compute_dtype=compute_dtype)


def plain_search_loop(generator, discriminator, x: torch.Tensor, z0: torch.Tensor, steps: int,
                      lam: float = ANOGAN_LAMBDA, lr: float = 0.01) -> torch.Tensor:
    """The textbook AnoGAN search as a user would write it in PyTorch: ``torch.optim.Adam`` on
    z (lr constant), loss (1 - lam) sum|x - G(z)| + lam sum|f(x) - f(G(z))| per sample,
    ``discriminator.features`` as f. Returns the final z (B, z_dim). The reference that the
    benchmarks time :func:`latent_search` against (same steps, reduction "sum", constant lr)."""
    with torch.no_grad():
        fx = discriminator.features(x)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        gz = generator(z)
        loss = ((1 - lam) * (x - gz).abs().flatten(1).sum(1)
                + lam * (fx - discriminator.features(gz)).abs().flatten(1).sum(1))
        loss.sum().backward()
        opt.step()
    return z.detach()


def _use_cuda_graph(x: torch.Tensor) -> bool:
    """Whether the search runs as a CUDA graph (a seam: the tests run the graph path's host
    logic on the CPU with torch.cuda's graph API replaced)."""
    return x.is_cuda


def _check_compute_dtype(compute_dtype, x):
    """None when G and f run in x's own dtype, else the autocast dtype."""
    if compute_dtype is None:
        return None
    if not isinstance(compute_dtype, torch.dtype) or compute_dtype not in COMPUTE_DTYPES:
        raise TypeError(f"{_PROBE}: compute_dtype must be None or one of "
                        f"{', '.join(map(str, COMPUTE_DTYPES))}, got {compute_dtype!r}")
    return None if compute_dtype == x.dtype else compute_dtype


def _check_search_args(x, steps, lam, restarts, tol, patience, seed, reduction) -> None:
    """TypeError/ValueError naming the argument, before anything runs."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{_PROBE}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{_PROBE}: x must be a float tensor, got {x.dtype}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise _err(f"x must be a batch (B, C, H, W) with B >= 1, got shape {tuple(x.shape)}")
    check_int(_PROBE, "steps", steps, minimum=0)
    check_real(_PROBE, "lam", lam, 0.0, 1.0)
    check_int(_PROBE, "restarts", restarts, minimum=1)
    check_real(_PROBE, "tol", tol, 0.0, lo_open=True, allow_none=True)
    check_int(_PROBE, "patience", patience, minimum=1)
    check_int(_PROBE, "seed", seed, allow_none=True)
    check_choice(_PROBE, "reduction", reduction, REDUCTIONS)


def _check_z0(z0, x, restarts) -> None:
    if z0 is None:
        return
    if not isinstance(z0, torch.Tensor) or not z0.is_floating_point():
        raise TypeError(f"{_PROBE}: z0 must be a float tensor or None, got "
                        f"{type(z0).__name__ if not isinstance(z0, torch.Tensor) else z0.dtype}")
    if z0.device != x.device:
        raise _err(f"z0 and x must be on the same device, got {z0.device} and {x.device}")
    if z0.dim() not in (2, 3) or (z0.dim() == 3 and z0.shape[1] != restarts):
        raise _err(f"z0 must have shape (B, z_dim) or (B, restarts={restarts}, z_dim), got "
                   f"{tuple(z0.shape)}")
    if z0.shape[0] != x.shape[0]:
        raise _err(f"z0 has {z0.shape[0]} rows but x has {x.shape[0]} images (batch sizes must "
                   "match)")


def _starts(x, z0, restarts: int, zd: int, seed) -> torch.Tensor:
    """(B * restarts, zd) start latents, image-major: z0 where given, else seeded N(0, I)."""
    B, dev = x.shape[0], x.device
    gen = None
    if seed is not None:
        gen = torch.Generator(device=dev)
        gen.manual_seed(seed)
    zdtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # adam_step_'s dtypes
    z = torch.randn((B, restarts, zd), generator=gen, device=dev, dtype=zdtype)
    if z0 is not None:
        z0 = z0.detach().to(zdtype)  # (an inference tensor is copied into z, not kept)
        if z0.dim() == 2:
            z[:, 0] = z0
        else:
            z.copy_(z0)
    return z.reshape(B * restarts, zd)


@torch.no_grad()
def _queries(generator, features, x, z, restarts: int):
    """(x, f(x)) repeated per restart and contiguous, after checking that G(z) matches x and
    that f gives one row per image."""
    B = x.shape[0]
    probe = generator(z[:1])
    if not isinstance(probe, torch.Tensor) or tuple(probe.shape[1:]) != tuple(x.shape[1:]):
        got = tuple(probe.shape[1:]) if isinstance(probe, torch.Tensor) else type(probe).__name__
        raise _err(f"x must match the generator's output shape: G(z) gives images of shape "
                   f"{got}, x has images of shape {tuple(x.shape[1:])}")
    xs = x.detach().clone() if x.is_inference() else x.detach()
    fx = features(xs)
    if not isinstance(fx, torch.Tensor) or fx.shape[0] != B:
        raise _err(f"features(x) must return a tensor with one row per image ({B}), got "
                   f"{tuple(fx.shape) if isinstance(fx, torch.Tensor) else type(fx).__name__}")
    if restarts > 1:
        xs = xs.repeat_interleave(restarts, dim=0)
        fx = fx.repeat_interleave(restarts, dim=0)
    return xs.contiguous(), fx.contiguous()


def _best_restart(st: "_Search", generator, features, xs, fx, B: int, restarts: int, *, lam,
                  reduction, backend) -> SearchResult:
    """The final loss at the final z, and per image the restart with the lowest one."""
    dev = xs.device
    with torch.no_grad():
        recon = generator(st.z)
        loss = ops.residual_fm_loss(xs, recon, fx, features(recon), lam=lam,
                                    reduction=reduction, backend=backend)
    if restarts > 1:
        best = loss.reshape(B, restarts).argmin(dim=1)
        rows = torch.arange(B, device=dev) * restarts + best
    else:
        best = torch.zeros(B, dtype=torch.int64, device=dev)
        rows = torch.arange(B * restarts, device=dev)
    hist = st.history[:, rows] if st.history is not None else None
    return SearchResult(z=st.z[rows], recon=recon[rows], loss=loss[rows],
                        steps_taken=st.step[rows].clone(), restart=best, loss_history=hist)


def _latent_search(generator, features, x, *, steps, lr, lam, z0, restarts, tol, patience, seed,
                   backend, reduction, betas, eps, z_dim, freeze, graph,
                   record_loss, compute_dtype) -> SearchResult:
    _check_search_args(x, steps, lam, restarts, tol, patience, seed, reduction)
    cdt = _check_compute_dtype(compute_dtype, x)
    lam = float(lam)
    lrs = lr_table(lr, steps)
    _check_z0(z0, x, restarts)
    zd = _z_dim(generator, z0, z_dim)
    if freeze:
        generator = _freeze(generator, "generator")
        features = _freeze(features, "features")
    elif not callable(generator) or not callable(features):
        raise TypeError(f"{_PROBE}: generator and features must be callable")

    z = _starts(x, z0, restarts, zd, seed)
    xs, fx = _queries(generator, features, x, z, restarts)
    fx_search = fx
    if cdt is not None and steps > 0:  # the target in the dtype the search computes f(G(z)) in
        with torch.no_grad(), _autocast(x.device, cdt):
            fx_search = features(xs).to(fx.dtype).reshape(fx.shape).contiguous()
    st = _Search(generator, features, xs, fx_search, z, lam=lam, reduction=reduction,
                 betas=tuple(betas), eps=float(eps), tol=tol, patience=patience, backend=backend,
                 lr0=lrs[0] if lrs else 0.0, record_steps=steps if record_loss else None,
                 compute_dtype=cdt)
    if graph and steps > 0 and _use_cuda_graph(x):
        st.run_cuda_graph(lrs)
    else:
        st.run_eager(lrs, 0)
    return _best_restart(st, generator, features, xs, fx, x.shape[0], restarts, lam=lam,
                         reduction=reduction, backend=backend)
