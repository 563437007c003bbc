"""int8 inference copies of single-pass methods, for CPU scoring (``Detector.compile(dtype=torch.qint8)``).

Algorithm: post-training static quantization with PyTorch's FX flow on the ``x86`` engine
(oneDNN / FBGEMM int8 kernels with VNNI where the CPU has it).

1. An inference copy of the method (:func:`anomgan.scoring.compiled.inference_copy` without the
   CPU layer rewrites: BatchNorm folded, eval mode, frozen), so the int8 graph quantizes plain
   ``Conv2d`` / ``ConvTranspose2d`` / ``Linear`` layers. A convolution that, on the inputs
   scoring gives it, is a matrix product (a DCGAN encoder's head: kernel = input size; a DCGAN
   generator's first layer: a transposed convolution of a 1x1 input) becomes an ``nn.Linear``
   (:class:`_PointwiseLinear`), which the int8 engine runs far faster. Every other transposed
   convolution becomes its phase decomposition (:class:`_ConvTransposeAsConv`: one stride-1
   convolution with stride² × C_out output channels, then an interleave and crop), exact in
   float32; the interleave is int8 (:class:`_PhaseGather`: slices, a concatenation and a permute
   inside the int8 graph) where the output size is a multiple of the stride, float32 elsewhere.
   torch's int8 ``ConvTranspose2d`` on the x86 engine returns wrong values (mean
   error 0.35-0.8 on outputs of range ~2 for C_in >= 12, torch 2.13, this AVX-512 CPU; fbgemm's
   is right but slower than float32), so no transposed convolution is ever quantized (one the
   decomposition does not cover stays float32). (The float32 CPU rewrite,
   :class:`anomgan.scoring.compiled.PhaseConvTranspose2d`, is the k 4 / s 2 / p 1 case with an
   interleave by strided view, which int8 tensors do not take.)
2. The *networks* to quantize are the largest sub-modules that FX can trace symbolically and
   that the method's ``score`` calls: the methods' networks check their input shapes in Python,
   which FX cannot trace, so the search descends from the method's direct children into their
   children until a module traces (a ``Sequential`` trunk, a convolution).
3. Each such network is prepared with observers (per-tensor affine uint8 activations,
   per-channel int8 weights), the method's own ``score`` runs on the calibration images, and
   each network is converted to int8 modules: inside a network activations stay int8 from layer
   to layer (quantized LeakyReLU/ReLU, fused conv + ReLU; float32 only around a float32
   interleave), and are dequantized at its boundary. The
   method's own arithmetic around the networks (input scaling, error maps, scores) stays float32.

Memory traffic: int8 activations and weights (a quarter of float32's), plus one float32 read
and write at each network boundary (and around a float32 interleave); an int8 interleave reads
and writes its planes' bytes twice (slices + concatenation, permute).

The scores are not float32's: quantization perturbs them (on the 32x32 ganomaly of issue 15,
correlation with float32 scores > 0.99 on random inputs), so calibrate the detector's threshold
on the quantized path (``Detector.calibrate`` after ``compile``), and calibrate the quantizer
itself on normal images of the kind the detector will score.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

__all__ = ["quantize_int8", "quantization_supported", "traceable_networks"]

ENGINE = "x86"


def quantization_supported() -> bool:
    """True when this torch build has the int8 CPU engine used here."""
    try:
        return ENGINE in torch.backends.quantized.supported_engines
    except Exception:  # noqa: BLE001 - a build without quantization support
        return False


class _Tracer(torch.fx.Tracer):
    """FX's tracer with :class:`_Interleave` opaque, as prepare_fx is told to treat it."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _Interleave) or super().is_leaf_module(m, qualname)


def _traces(module: nn.Module) -> bool:
    try:
        _Tracer().trace(module)
        return True
    except Exception:  # noqa: BLE001 - any tracing failure means "descend further"
        return False


def traceable_networks(root: nn.Module, called: set[int]) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute name, module) of the largest FX-traceable sub-modules of ``root``
    that hold parameters and whose ``id`` is in ``called`` (ran during a scoring pass)."""
    out = []

    def visit(parent: nn.Module):
        for name, child in parent.named_children():
            if id(child) not in called or not any(True for _ in child.parameters()):
                continue
            if _traces(child):
                out.append((parent, name, child))
            else:
                visit(child)

    visit(root)
    return out


class _PointwiseLinear(nn.Module):
    """A convolution that, at the model size, sees an input exactly its kernel's size (a DCGAN
    encoder's head) or a transposed convolution on a 1x1 input (a DCGAN generator's first
    layer), as one ``nn.Linear`` (which the int8 engine runs far faster than such a
    convolution): (N, C_in, h, w) -> (N, *out_shape)."""

    def __init__(self, layer: nn.Module, out_shape: tuple[int, ...]):
        super().__init__()
        w = layer.weight.detach()
        if isinstance(layer, nn.ConvTranspose2d):  # (C_in, C_out, kh, kw): x (N, C_in) @ W
            wm = w.reshape(w.shape[0], -1).t()
            b = None if layer.bias is None else layer.bias.detach().repeat_interleave(
                w.shape[2] * w.shape[3])
        else:  # (C_out, C_in, kh, kw): x (N, C_in*kh*kw) @ W^T
            wm, b = w.reshape(w.shape[0], -1), (None if layer.bias is None else layer.bias.detach())
        self.linear = nn.Linear(wm.shape[1], wm.shape[0], bias=b is not None)
        with torch.no_grad():
            self.linear.weight.copy_(wm)
            if b is not None:
                self.linear.bias.copy_(b)
        self.linear.requires_grad_(False)
        self.out_shape = tuple(out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.flatten, not Tensor.flatten: FX quantization keeps the function's output int8
        return self.linear(torch.flatten(x, 1)).reshape(x.shape[0], *self.out_shape)


def _pointwise_as_linear_(root: nn.Module, called: set[int], inputs: dict[int, tuple]) -> None:
    """Replace, in place, each called convolution whose recorded input makes it a matrix
    product (see :class:`_PointwiseLinear`); ``called``/``inputs`` learn the new modules."""
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if id(child) not in inputs or type(child) not in (nn.Conv2d, nn.ConvTranspose2d):
                continue
            x = inputs[id(child)][0]
            if (child.groups != 1 or child.dilation != (1, 1) or child.padding != (0, 0)
                    or child.padding_mode != "zeros" or x.dim() != 4):
                continue
            if isinstance(child, nn.ConvTranspose2d):
                if tuple(x.shape[2:]) != (1, 1) or child.output_padding != (0, 0):
                    continue
                out_shape = (child.out_channels, *child.kernel_size)
            else:
                if tuple(x.shape[2:]) != tuple(child.kernel_size):
                    continue
                out_shape = (child.out_channels, 1, 1)
            new = _PointwiseLinear(child, out_shape)
            setattr(parent, name, new)
            for m in (new, new.linear):
                called.add(id(m))
                inputs[id(m)] = (x,) if m is new else (x.flatten(1),)


class _Interleave(nn.Module):
    """(N, C_out*sh*sw, Hc, Wc) phase planes of a transposed convolution of an (H, W) input ->
    its output (N, C_out, H_out, W_out): the phases put in place, rows from ``offset`` on;
    float32, kept out of the int8 graph: the fallback where the output size is not a multiple of
    the stride (else :class:`_PhaseGather` does it in int8)."""

    def __init__(self, kernel, stride, padding, output_padding, offset):
        super().__init__()
        self.kernel, self.stride, self.padding = tuple(kernel), tuple(stride), tuple(padding)
        self.output_padding, self.offset = tuple(output_padding), tuple(offset)

    def out_size(self, h_in: int, w_in: int) -> tuple[int, int]:
        """The transposed convolution's output size for an (h_in, w_in) input."""
        (sh, sw), (kh, kw) = self.stride, self.kernel
        (ph, pw), (qh, qw) = self.padding, self.output_padding
        return (h_in - 1) * sh - 2 * ph + kh + qh, (w_in - 1) * sw - 2 * pw + kw + qw

    def forward(self, y: torch.Tensor, h_in: int, w_in: int) -> torch.Tensor:
        (sh, sw), (oh, ow) = self.stride, self.offset
        h_out, w_out = self.out_size(h_in, w_in)
        n, c, hc, wc = y.shape
        co = c // (sh * sw)  # channel (r_h s_w + r_w) C_out + o: each phase's C_out adjacent
        if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
            # int8 convolutions return NHWC: move runs of C_out values, stay NHWC
            t = y.permute(0, 2, 3, 1).reshape(n, hc, wc, sh, sw, co).permute(0, 1, 3, 2, 4, 5)
            out = t.reshape(n, hc * sh, wc * sw, co).permute(0, 3, 1, 2)
        else:
            t = y.reshape(n, sh, sw, co, hc, wc).permute(0, 3, 4, 1, 5, 2)
            out = t.reshape(n, co, hc * sh, wc * sw)
        return out[:, :, oh:oh + h_out, ow:ow + w_out]


class _ConvTransposeAsConv(nn.Module):
    """A ``ConvTranspose2d`` (groups 1, dilation 1, zero padding) as its phase decomposition.

    With o' = o + p = q s + r (0 <= r < s), the transposed convolution is
    y[o] = sum_j x[q - j] w[j s + r], j < J = ceil(k / s): for each phase r a stride-1
    correlation with the taps w[(J-1-u) s + r], u < J, over the input padded by J-1 (+ e, so
    that the planes cover the output window). One ``Conv2d`` computes all s_h s_w phases as
    output channels (r_h, r_w, C_out); its interleave (:class:`_Interleave`, or
    :class:`_PhaseGather` in the int8 copies) puts the phases in place and crops
    the output from row p + e s, column p_w + e_w s_w. Work: (H + J - 1 + 2e)(W + J_w - 1 + 2e_w)
    / (H W) times the transposed convolution's multiply-adds (for k 4, s 2, p 1: 1.56x at 4x4
    inputs, 1.13x at 16x16)."""

    def __init__(self, layer: nn.ConvTranspose2d):
        super().__init__()
        w = layer.weight.detach()  # (C_in, C_out, kh, kw)
        c_in, c_out, kh, kw = w.shape
        (sh, sw), (ph, pw), (qh, qw) = layer.stride, layer.padding, layer.output_padding
        jh, jw = -(-kh // sh), -(-kw // sw)
        # planes cover rows [0, (H + J - 1 + 2e) s); the output window ends at p + H_out, which
        # exceeds (H + J - 1) s by at most k + q - p - J s: pad e more input rows on each side
        eh, ew = (max(0, -(-(kh + qh - ph - jh * sh) // sh)), max(0, -(-(kw + qw - pw - jw * sw) // sw)))
        taps = torch.zeros(sh, sw, c_out, c_in, jh, jw, dtype=w.dtype)
        for rh in range(sh):
            for rw in range(sw):
                for u in range(jh):
                    for v in range(jw):
                        th, tw = (jh - 1 - u) * sh + rh, (jw - 1 - v) * sw + rw
                        if th < kh and tw < kw:
                            taps[rh, rw, :, :, u, v] = w[:, :, th, tw].t()
        self.conv = nn.Conv2d(c_in, c_out * sh * sw, (jh, jw), padding=(jh - 1 + eh, jw - 1 + ew),
                              bias=layer.bias is not None, dtype=w.dtype)
        with torch.no_grad():
            self.conv.weight.copy_(taps.reshape(c_out * sh * sw, c_in, jh, jw))
            if layer.bias is not None:
                self.conv.bias.copy_(layer.bias.detach().repeat(sh * sw))
        self.conv.requires_grad_(False)
        self.interleave = _Interleave((kh, kw), (sh, sw), (ph, pw), (qh, qw),
                                      (ph + eh * sh, pw + ew * sw))

    @staticmethod
    def applies(layer: nn.Module) -> bool:
        return (type(layer) is nn.ConvTranspose2d and layer.groups == 1 and layer.dilation == (1, 1)
                and layer.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.interleave(self.conv(x), x.shape[2], x.shape[3])


class _PhaseGather(nn.Module):
    """The int8 interleave of a :class:`_ConvTransposeAsConv` whose output size is a multiple of
    its stride: (N, s_h s_w C, Hc, Wc) phase planes -> the layer's output X (N, C, H, W).

    X in space-to-depth form, S (N, s_h s_w C, H / s_h, W / s_w) with channel (c_h s_w + c_w) C + x
    holding X[s_h m + c_h, s_w n + c_w], has as each (c_h, c_w) block one rectangle of one phase
    plane, so S is s_h s_w slices and a concatenation, and X one reshape-permute copy of S: shape
    ops that keep int8 tensors int8 (one byte an element read and written twice; the float32
    interleave with its dequantize and quantize took 20x longer: 2.7 against 0.14 ms for
    ganomaly's 64 x 512 x 5 x 5 planes).
    Sizes are fixed at build (the model size)."""

    def __init__(self, interleave: _Interleave, c_out: int, h_in: int, w_in: int):
        super().__init__()
        (sh, sw), (oh, ow) = interleave.stride, interleave.offset
        h, w = interleave.out_size(h_in, w_in)
        if not self.applies(interleave, h_in, w_in):
            raise ValueError(f"_PhaseGather: output {h}x{w} is not a multiple of stride {sh}x{sw}")
        self.stride, self.x_size, self.c_out = (sh, sw), (h, w), c_out
        self.blocks = []  # (first channel, last channel + 1, first row, first column)
        for ch in range(sh):  # X[s m + c] = Y[s m + c + o] = phase (c + o) % s, row m + (c + o) // s
            for cw in range(sw):
                k = ((ch + oh) % sh) * sw + (cw + ow) % sw
                self.blocks.append((k * c_out, (k + 1) * c_out, (ch + oh) // sh, (cw + ow) // sw))

    @staticmethod
    def applies(interleave: _Interleave, h_in: int, w_in: int) -> bool:
        h, w = interleave.out_size(h_in, w_in)
        return h % interleave.stride[0] == 0 and w % interleave.stride[1] == 0

    def forward(self, y: torch.Tensor, h_in=None, w_in=None) -> torch.Tensor:
        """h_in, w_in: as :class:`_Interleave` takes them; unused (sizes fixed at build)."""
        (sh, sw), (h, w), c = self.stride, self.x_size, self.c_out
        hs, ws = h // sh, w // sw
        # torch.narrow, not indexing: FX quantization keeps narrow's output int8 (same scale);
        # channels-last blocks: int8 cat's fast path (else it dequantizes and requantizes)
        s = torch.cat([torch.narrow(torch.narrow(torch.narrow(y, 1, a, b - a), 2, r, hs), 3, col, ws)
                       .contiguous(memory_format=torch.channels_last)
                       for a, b, r, col in self.blocks], 1)
        t = s.permute(0, 2, 3, 1).reshape(-1, hs, ws, sh, sw, c).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(-1, h, w, c).permute(0, 3, 1, 2)  # NCHW view of NHWC memory


def _convtranspose_as_conv_(root: nn.Module, called: set[int], inputs: dict[int, tuple]) -> None:
    """Replace, in place, each called ``ConvTranspose2d`` that :class:`_ConvTransposeAsConv`
    applies to, with the int8 :class:`_PhaseGather` as its interleave where its recorded input
    allows; ``called``/``inputs`` learn the new modules."""
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in called and _ConvTransposeAsConv.applies(child):
                new = _ConvTransposeAsConv(child)
                if id(child) in inputs:
                    inputs[id(new)] = inputs[id(child)]
                    h_in, w_in = inputs[id(child)][0].shape[2:]
                    if _PhaseGather.applies(new.interleave, h_in, w_in):
                        new.interleave = _PhaseGather(new.interleave, child.out_channels, h_in, w_in)
                setattr(parent, name, new)
                called.update((id(new), id(new.conv), id(new.interleave)))


def _called_modules(root: nn.Module, run: Callable[[], None]) -> tuple[set[int], dict[int, tuple]]:
    """ids of the modules ``run()`` calls, and each one's first positional inputs."""
    called, inputs, handles = set(), {}, []

    def hook(mod, args):
        called.add(id(mod))
        inputs.setdefault(id(mod), tuple(a.detach() if isinstance(a, torch.Tensor) else a
                                         for a in args))

    for m in root.modules():
        handles.append(m.register_forward_pre_hook(hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return called, inputs


def quantize_int8(method: nn.Module, calibrate: Callable[[Callable], None]) -> nn.Module:
    """An int8 inference copy of single-pass ``method`` (module doc); ``method`` is not modified.

    calibrate: ``calibrate(score)`` scores the calibration images (normal images of the kind
    that will be scored) with ``score(x, scoring=None, backend=None) -> (scores, maps)``, the
    copy's ``score``, exactly as detection will call it (it is called twice: once to find the
    networks that scoring uses, once to observe their activations)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from .compiled import inference_copy

    if not quantization_supported():
        raise RuntimeError(f"int8 scoring needs torch's {ENGINE!r} quantized engine, which this "
                           f"torch build lacks (engines: {torch.backends.quantized.supported_engines})")
    params = list(method.parameters())
    if not params or params[0].device.type != "cpu":
        raise ValueError("compile(dtype=torch.qint8): int8 scoring runs on the CPU only; got a "
                         f"method on {params[0].device if params else 'no device'}")
    copy = inference_copy(method, rewrite=False)
    for m in copy.modules():  # the int8 modules repack their weights; plain layouts here
        for p in m.parameters(recurse=False):
            p.data = p.data.contiguous()
        if getattr(m, "inplace", False) is True:  # int8 activations are not computed in place
            m.inplace = False
    with torch.no_grad():
        called, inputs = _called_modules(copy, lambda: calibrate(copy.score))
    _pointwise_as_linear_(copy, called, inputs)
    _convtranspose_as_conv_(copy, called, inputs)
    nets = traceable_networks(copy, called)
    if not nets:
        raise ValueError(f"compile(dtype=torch.qint8): found no traceable network in "
                         f"{type(method).__name__} to quantize")
    torch.backends.quantized.engine = ENGINE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantization's deprecation notices (torch >= 2.5)
        # the interleave stays float32 (an opaque leaf); any transposed convolution left (groups,
        # dilation) stays float32 too: the engine's int8 one is wrong (module doc)
        qconfig = (get_default_qconfig_mapping(ENGINE).set_object_type(nn.ConvTranspose2d, None)
                   .set_object_type(_Interleave, None))
        custom = PrepareCustomConfig().set_non_traceable_module_classes([_Interleave])
        prepared = []
        for parent, name, net in nets:
            p = prepare_fx(net, qconfig, inputs[id(net)], prepare_custom_config=custom)
            setattr(parent, name, p)
            prepared.append((parent, name, p))
        with torch.no_grad():
            calibrate(copy.score)
        for parent, name, p in prepared:
            setattr(parent, name, convert_fx(p))
    # a float32 anchor as the first parameter: the methods take their input dtype and device
    # from their first parameter, which int8 modules no longer provide
    own = list(copy._parameters.items())
    copy._parameters.clear()
    copy.register_parameter("_anomgan_float32", nn.Parameter(torch.empty(0), requires_grad=False))
    copy._parameters.update(own)
    copy.requires_grad_(False)
    copy._anomgan_quantized = len(nets)
    return copy
