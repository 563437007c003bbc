"""The compiled single-pass scoring path behind :meth:`anomgan.detector.Detector.compile`.

A single-pass method (``Method.single_pass``: ``ganomaly``, ``dual-disc``) scores a batch with
one forward pass of its networks and a few element-wise ops. :class:`CompiledScorer` runs the
method's own ``score`` on an *inference copy* of the method, optionally under
``torch.compile``, and on CUDA replays it from CUDA graphs captured for fixed batch shapes.

Inference copy (:func:`inference_copy`; the caller's method is never modified)
---------------------------------------------------------------------------
* a deep copy in eval mode, every parameter frozen; BatchNorm folded into the preceding
  convolution (:func:`anomgan.scoring.frozen.fold_batchnorm_`);
* on the CPU (oneDNN), three exact rewrites of layers that oneDNN runs far below its speed:
  - ``ConvTranspose2d(k=4, s=2, p=1)`` with at most :data:`PHASE_MAX_OUT` output channels ->
    :class:`PhaseConvTranspose2d`: one 2×2 convolution (padding 1) that computes the four
    output phases as 4·C_out channels, then an interleave. Every output pixel sums exactly the
    kernel taps the transposed convolution sums (no zero taps);
  - a transposed convolution on a 1×1 input (the DCGAN generator's first layer) and a
    convolution whose kernel covers its whole unpadded input (the DCGAN encoder's head) ->
    one matrix product (:class:`LinearWhenPointwise`; other input sizes run the original
    layer);
  - 4-d weights stored channels_last, and every convolution's output made channels_last
    (:class:`ChannelsLastOut`), so that no layer converts layouts.
  The copy computes the same function to float32 rounding (the sums are reordered); the
  scores agree with the eager path within 1e-5 (tests/test_detect_compile.py).

torch.compile
-------------
``compiler`` ("inductor", "aot_eager", ... any ``torch.compile`` backend, None for none, or
"auto": inductor on CUDA, none on the CPU, where it measured no faster) compiles the copy's
``score`` with ``dynamic=False``: one graph per batch shape (a detector's
chunks have at most two shapes: ``batch_size`` and the remainder).

CUDA graphs (CUDA only)
-----------------------
:class:`GraphCache` captures the (compiled) score for a fixed input shape after ``warmup``
eager calls and replays it: the input is copied into the graph's static input and the outputs
cloned out. Shapes are keyed by (shape, dtype, device); a batch smaller than a captured one of
the same image shape is zero-padded to it (an image's score never depends on its batch, so the
padding rows are simply dropped). At most ``max_graphs`` shapes are captured; others run
without a graph. A capture that fails (an op that cannot be captured) logs a warning and turns
graphs off for that scorer. The kernel backend is part of the key.

Staleness: the copy is a snapshot of the weights. :meth:`CompiledScorer.is_current` tells
whether the method's parameters and buffers are still those the copy was made from (same
storage, same in-place version, same device); the detector remakes a stale scorer.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .frozen import prepare_frozen

log = logging.getLogger(__name__)

__all__ = ["PHASE_MAX_OUT", "PhaseConvTranspose2d", "LinearWhenPointwise", "ChannelsLastOut",
           "CastIO", "inference_copy",
           "GraphCache", "CompiledScorer", "weights_key"]

#: ConvTranspose2d(4, 2, 1) layers with at most this many output channels are rewritten on the
#: CPU (measured with oneDNN on AVX-512: 2-5x faster for C_out <= 16, slower for C_out >= 32,
#: where the transposed convolution already runs near the FMA peak)
PHASE_MAX_OUT = 16


def weights_key(module: nn.Module):
    """Changes whenever a parameter or buffer of ``module`` is replaced, modified in place or
    moved. Checked on every compiled detect call, so it walks the module tree itself (a third
    of ``parameters()``'s Python time: ~40 against ~120 us for dual-disc)."""
    out, stack = [], [module]
    try:
        while stack:
            mod = stack.pop()
            for t in (*mod._parameters.values(), *mod._buffers.values()):
                if t is not None:
                    out.append((t.data_ptr(), t._version, t.device))
            stack.extend(mod._modules.values())
    except RuntimeError:  # inference tensors keep no version counter: never reuse a copy
        return object()
    return tuple(out)


# --------------------------------------------------------------------------- layer rewrites
class PhaseConvTranspose2d(nn.Module):
    """``ConvTranspose2d(C_in, C_out, 4, stride=2, padding=1)`` as a 2×2 convolution.

    Output pixel (2i + a, 2j + b) of the transposed convolution sums input rows i + a - 1 + t
    (t in {0, 1}) with kernel row 3 - a - 2t, and likewise for columns. A 2×2 convolution with
    padding 1 over the input, whose 4·C_out output channels (a, b, o) hold those taps, gives at
    window (i + a, j + b) exactly that sum; an interleave puts the phases in place."""

    def __init__(self, ct: nn.ConvTranspose2d):
        super().__init__()
        if not self.fits(ct):
            raise ValueError(f"PhaseConvTranspose2d: needs ConvTranspose2d(k=4, s=2, p=1, "
                             f"groups=1, dilation=1, output_padding=0), got {ct}")
        w = ct.weight.detach()  # (C_in, C_out, 4, 4)
        c_in, c_out = w.shape[:2]
        k = torch.tensor([[3, 1], [2, 0]], device=w.device)  # [phase][tap] -> kernel index
        w2 = w[:, :, k[:, :, None, None], k[None, None, :, :]]  # (C_in, C_out, a, t, b, u)
        # output channel (a, b, o) = (2a + b) C_out + o: each phase's C_out channels adjacent
        w2 = w2.permute(2, 4, 1, 0, 3, 5).reshape(4 * c_out, c_in, 2, 2)
        self.out_channels = c_out
        self.weight = nn.Parameter(w2.contiguous(), requires_grad=False)
        self.bias = None if ct.bias is None else nn.Parameter(
            ct.bias.detach().repeat(4).clone(), requires_grad=False)

    @staticmethod
    def fits(m: nn.Module) -> bool:
        return (type(m) is nn.ConvTranspose2d and m.kernel_size == (4, 4) and m.stride == (2, 2)
                and m.padding == (1, 1) and m.groups == 1 and m.dilation == (1, 1)
                and m.output_padding == (0, 0) and m.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        y = F.conv2d(x, self.weight, self.bias, padding=1)  # (N, 4 C_out, h + 1, w + 1)
        c = self.out_channels
        # out[n, o, 2i + a, 2j + b] = y[n, (2a + b) c + o, i + a, j + b]: the offset into y is
        # linear in (i, a, j, b, o), so one strided view of y holds the interleaved output and
        # one copy lays it out (channels_last when y is, as oneDNN returns it here)
        sn, sc, sh, sw = y.stride()
        sa, sb = sh + 2 * c * sc, sw + c * sc
        if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
            v = y.as_strided((n, h, 2, w, 2, c), (sn, sh, sa, sw, sb, sc))  # -> NHWC
            return v.reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
        v = y.as_strided((n, c, h, 2, w, 2), (sn, sc, sh, sa, sw, sb))
        return v.reshape(n, c, 2 * h, 2 * w)


class LinearWhenPointwise(nn.Module):
    """A ``Conv2d`` whose kernel covers its whole (unpadded) input, or a ``ConvTranspose2d``
    applied to a 1×1 input, run as one matrix product; any other input runs the original
    layer (kept as ``.layer``)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        if not self.fits(layer):
            raise ValueError(f"LinearWhenPointwise: cannot rewrite {layer}")
        self.layer = layer
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        w = layer.weight.detach()
        if self.transposed:  # (C_in, C_out, kh, kw): out (N, C_out*kh*kw) = x (N, C_in) @ W
            self.kernel = tuple(w.shape[2:])
            wm = w.reshape(w.shape[0], -1).t()
            b = None if layer.bias is None else layer.bias.detach().repeat_interleave(
                self.kernel[0] * self.kernel[1])
        else:  # (C_out, C_in, kh, kw): out (N, C_out) = x (N, C_in*kh*kw) @ W^T
            self.kernel = tuple(w.shape[2:])
            wm = w.reshape(w.shape[0], -1)
            b = None if layer.bias is None else layer.bias.detach()
        self.weight = nn.Parameter(wm.contiguous().clone(), requires_grad=False)
        self.bias = None if b is None else nn.Parameter(b.clone(), requires_grad=False)

    @staticmethod
    def fits(m: nn.Module) -> bool:
        if type(m) not in (nn.Conv2d, nn.ConvTranspose2d) or m.groups != 1:
            return False
        if m.dilation != (1, 1) or m.padding != (0, 0) or m.padding_mode != "zeros":
            return False
        return isinstance(m, nn.Conv2d) or m.output_padding == (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.transposed and (h, w) == (1, 1):
            kh, kw = self.kernel
            return F.linear(x.reshape(n, -1), self.weight, self.bias).view(n, -1, kh, kw)
        if not self.transposed and (h, w) == self.kernel:
            return F.linear(x.reshape(n, -1), self.weight, self.bias).view(n, -1, 1, 1)
        return self.layer(x)


class ChannelsLastOut(nn.Module):
    """A convolution whose output is made channels_last (a no-op when it already is): the
    first layer of a 1-channel image outputs NCHW, and a U-Net's skip concatenation of NCHW
    and channels_last activations copies both."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x).contiguous(memory_format=torch.channels_last)


def _rewrite_children(module: nn.Module) -> int:
    count = 0
    for name, child in list(module.named_children()):
        if PhaseConvTranspose2d.fits(child) and child.out_channels <= PHASE_MAX_OUT:
            setattr(module, name, PhaseConvTranspose2d(child))
            count += 1
        elif LinearWhenPointwise.fits(child) and (
                isinstance(child, nn.ConvTranspose2d) or child.kernel_size != (1, 1)):
            setattr(module, name, LinearWhenPointwise(child))
            count += 1
        elif type(child) in (nn.Conv2d, nn.ConvTranspose2d):
            setattr(module, name, ChannelsLastOut(child))
        else:
            count += _rewrite_children(child)
    return count


class CastIO(nn.Module):
    """A network run in a lower precision: floating inputs cast to ``dtype``, floating
    outputs (a tensor or a tuple of them) cast back to float32."""

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net, self.dtype = net.to(dtype), dtype

    def _cast(self, v, dtype):
        return v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v

    def forward(self, *args):
        out = self.net(*(self._cast(a, self.dtype) for a in args))
        if isinstance(out, tuple):
            return tuple(self._cast(o, torch.float32) for o in out)
        return self._cast(out, torch.float32)

    def __getattr__(self, name):  # the wrapped network's own methods and attributes
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["net"], name)


def inference_copy(module: nn.Module, *, rewrite: bool | None = None,
                   dtype: torch.dtype | None = None) -> nn.Module:
    """A frozen, eval-mode copy of ``module`` for scoring (see the module doc); ``rewrite``:
    the CPU layer rewrites (None: on CPU parameters only). The copy's ``_anomgan_rewrites`` is
    the number of layers rewritten.

    ``dtype`` (e.g. torch.bfloat16): the networks (the module's direct sub-modules) run in that
    precision (:class:`CastIO`); the module's own float32 arithmetic (the input's scaling, maps
    and scores) stays float32. Not equal to float32 scoring: see :class:`CompiledScorer`."""
    frozen = prepare_frozen(module)  # deep copy, eval, frozen, BatchNorm folded, channels_last on CPU
    params = list(frozen.parameters())
    on_cpu = bool(params) and params[0].device.type == "cpu"
    n = _rewrite_children(frozen) if (on_cpu if rewrite is None else rewrite) else 0
    if on_cpu:
        for m in frozen.modules():
            w = getattr(m, "weight", None)
            if isinstance(w, torch.Tensor) and w.dim() == 4:
                w.data = w.data.contiguous(memory_format=torch.channels_last)
    if dtype is not None and dtype != torch.float32:
        if not dtype.is_floating_point:
            raise ValueError(f"inference_copy: dtype must be a floating dtype, got {dtype}")
        device = params[0].device if params else None
        for name, child in list(frozen.named_children()):
            if any(True for _ in child.parameters()):
                setattr(frozen, name, CastIO(child, dtype))
        # a float32 anchor as the first parameter: methods take their input dtype from it
        # (Method.to_model), so images, maps and scores stay float32
        own = list(frozen._parameters.items())
        frozen._parameters.clear()
        frozen.register_parameter("_anomgan_float32", nn.Parameter(
            torch.empty(0, device=device), requires_grad=False))
        frozen._parameters.update(own)
    frozen.requires_grad_(False)
    frozen._anomgan_rewrites = n
    return frozen


# --------------------------------------------------------------------------- CUDA graphs
def _cuda_capture(fn: Callable, static_in: torch.Tensor, warmup: int):
    """(replay, static outputs) of ``fn(static_in)`` captured in a CUDA graph."""
    dev = static_in.device
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        for _ in range(warmup):
            fn(static_in)
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(static_in)
    return graph.replay, out


class GraphCache:
    """``fn(x) -> tuple of tensors`` replayed from graphs captured per input shape (see the
    module doc). ``capture(fn, static_in, warmup) -> (replay, static_outputs)`` is the CUDA
    capture by default; tests pass a stand-in to exercise the keying on the CPU.

    ``stats`` counts "replay", "padded" (replays of a padded batch), "capture" and "plain"
    (calls run without a graph)."""

    def __init__(self, fn: Callable, *, max_graphs: int = 4, warmup: int = 3, capture=None):
        self.fn = fn
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.capture = capture or _cuda_capture
        self.enabled = True
        self.graphs: dict[tuple, tuple[torch.Tensor, Callable, tuple]] = {}
        self.stats = {"replay": 0, "padded": 0, "capture": 0, "plain": 0}

    @staticmethod
    def key(x: torch.Tensor, *extra) -> tuple:
        return (tuple(x.shape), x.dtype, x.device, *extra)

    def _padded_entry(self, x: torch.Tensor, extra: tuple):
        """The captured entry with the smallest batch >= x's for x's image shape, or None."""
        best = None
        for key, entry in self.graphs.items():
            shape, dtype, device, *rest = key
            if (shape[1:] == tuple(x.shape[1:]) and dtype == x.dtype and device == x.device
                    and tuple(rest) == extra and shape[0] >= x.shape[0]):
                if best is None or shape[0] < best[0].shape[0]:
                    best = entry
        return best

    def __call__(self, x: torch.Tensor, *extra):
        if not self.enabled:
            self.stats["plain"] += 1
            return self.fn(x, *extra)
        key = self.key(x, *extra)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._padded_entry(x, tuple(extra))
            if entry is not None:
                static_in, replay, outs = entry
                b = x.shape[0]
                static_in[:b].copy_(x)
                static_in[b:].zero_()
                replay()
                self.stats["padded"] += 1
                return tuple(o[:b].clone() for o in outs)
            if len(self.graphs) >= self.max_graphs:
                self.stats["plain"] += 1
                return self.fn(x, *extra)
            static_in = x.clone()
            try:
                replay, outs = self.capture(lambda t: self.fn(t, *extra), static_in, self.warmup)
            except Exception as exc:  # noqa: BLE001 - any capture failure: run without graphs
                log.warning("Detector.compile: CUDA graph capture failed (%s: %s); scoring runs "
                            "without graphs", type(exc).__name__, exc)
                self.enabled = False
                self.graphs.clear()
                self.stats["plain"] += 1
                return self.fn(x, *extra)
            self.stats["capture"] += 1
            entry = self.graphs[key] = (static_in, replay, tuple(outs))
        static_in, replay, outs = entry
        static_in.copy_(x)
        replay()
        self.stats["replay"] += 1
        return tuple(o.clone() for o in outs)


# --------------------------------------------------------------------------- the scorer
class CompiledScorer:
    """``scorer(x, scoring, backend) -> (scores, maps)`` of a single-pass method, equal to
    ``method.score(x, scoring, backend=backend)`` within float32 rounding (module doc).

    compiler   : a ``torch.compile`` backend name ("inductor"), None (no torch.compile: the
                 inference copy alone), or "auto": "inductor" on CUDA, None on the CPU (on the
                 2-core AVX-512 CPU this was measured on, inductor's code around the oneDNN
                 convolutions made the copy 0-10 % slower, after seconds of compiling).
    cuda_graphs: on CUDA, replay CUDA graphs per batch shape (:class:`GraphCache`).
    dtype      : None (float32: equal to eager within 1e-5), or a lower precision for the
                 networks (torch.bfloat16: about 2-3x faster on CPUs with AVX512-BF16 or AMX
                 and on GPUs; scores then differ from float32 ones by ~1e-3 relative, so
                 calibrate the threshold with the same setting); torch.qint8: int8 networks on
                 the CPU (:mod:`anomgan.scoring.quantized`), which needs ``calibrate``.
    calibrate  : for torch.qint8, ``calibrate(score)`` scores the calibration images with
                 ``score`` (see :func:`anomgan.scoring.quantized.quantize_int8`).
    """

    def __init__(self, method, *, compiler: str | None = "auto", cuda_graphs: bool = True,
                 max_graphs: int = 4, capture=None, dtype: torch.dtype | None = None,
                 calibrate: Callable | None = None):
        if not getattr(type(method), "single_pass", False):
            raise ValueError(f"CompiledScorer: {type(method).name!r} does not score in a single "
                             "pass")
        self.source = method
        self.key = weights_key(method)
        if dtype == torch.qint8:
            from .quantized import quantize_int8

            if calibrate is None:
                raise ValueError("CompiledScorer: dtype=torch.qint8 needs calibrate")
            if compiler not in ("auto", None):
                raise ValueError(f"compile(dtype=torch.qint8): compiler must be 'auto' or None "
                                 f"(torch.compile does not take int8 modules), got {compiler!r}")
            self.copy, compiler, cuda_graphs = quantize_int8(method, calibrate), None, False
        else:
            self.copy = inference_copy(method, dtype=dtype)
        self.device = next(self.copy.parameters()).device
        if compiler == "auto":
            compiler = "inductor" if self.device.type == "cuda" else None
        self.compiler = compiler
        score = self.copy.score
        self._fn = score if compiler is None else torch.compile(score, backend=compiler,
                                                                dynamic=False)
        self.graphs = None
        if cuda_graphs and (self.device.type == "cuda" or capture is not None):
            self.graphs = GraphCache(self._graph_fn, max_graphs=max_graphs, capture=capture)
        self._scoring = None

    def _graph_fn(self, x, backend, _scoring_key):
        return self._fn(x, self._scoring, backend=backend)

    def is_current(self, method) -> bool:
        """True while ``method`` is the one this scorer copied, with unchanged weights."""
        return method is self.source and weights_key(method) == self.key

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, scoring=None, backend: str | None = None):
        if self.graphs is None:
            scores, maps = self._fn(x, scoring, backend=backend)
            return scores, maps
        self._scoring = scoring  # part of the key through its repr (settings are a dataclass)
        scores, maps = self.graphs(x, backend, repr(scoring))
        return scores, maps
