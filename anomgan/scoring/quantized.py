"""int8 inference copies of single-pass methods, for CPU scoring (``Detector.compile(dtype=torch.qint8)``).

Algorithm: post-training static quantization with PyTorch's FX flow on the ``x86`` engine
(oneDNN / FBGEMM int8 kernels with VNNI where the CPU has it).

1. An inference copy of the method (:func:`anomgan.scoring.compiled.inference_copy` without the
   CPU layer rewrites: BatchNorm folded, eval mode, frozen), so the int8 graph quantizes plain
   ``Conv2d`` / ``ConvTranspose2d`` / ``Linear`` layers. A convolution that, on the inputs
   scoring gives it, is a matrix product (a DCGAN encoder's head: kernel = input size; a DCGAN
   generator's first layer: a transposed convolution of a 1x1 input) becomes an ``nn.Linear``
   (:class:`_PointwiseLinear`, features in NHWC order), which the int8 engine runs far faster.
   Every other transposed convolution becomes its phase decomposition
   (:class:`_ConvTransposeAsConv`: one stride-1 convolution with stride² × C_out output
   channels, then an interleave and crop: :class:`_Interleave`, one ``as_strided`` view and one
   copy at stride 2), exact in float32. A ReLU that follows either kind of layer moves inside
   it, before the reshape / interleave, so the int8 engine fuses it into the layer.
   torch's int8 ``ConvTranspose2d`` on the x86 engine returns wrong values (mean
   error 0.35-0.8 on outputs of range ~2 for C_in >= 12, torch 2.13, this AVX-512 CPU; fbgemm's
   is right but slower than float32), so no transposed convolution is ever quantized (one the
   decomposition does not cover stays float32). (The float32 CPU rewrite,
   :class:`anomgan.scoring.compiled.PhaseConvTranspose2d`, is the k 4 / s 2 / p 1 case.)
2. The *networks* to quantize are the largest sub-modules that FX can trace symbolically and
   that the method's ``score`` calls: the methods' networks check their input shapes in Python,
   which FX cannot trace, so the search descends from the method's direct children into their
   children until a module traces (a ``Sequential`` trunk, a convolution).
3. Each such network is prepared with observers (per-tensor affine uint8 activations,
   per-channel int8 weights; the interleaves opaque float32 leaves), the method's own ``score``
   runs on the calibration images, and each network is converted to int8 modules: inside a
   network activations stay int8 from layer to layer (quantized LeakyReLU, fused conv + ReLU),
   and are dequantized at its boundary. An interleave only copies and views, so where its
   consumers take any input scale (convolutions, not concatenations) the dequantize / quantize
   pair FX put around it is removed and it runs on the int8 planes
   (:func:`_int8_through_interleaves_`). The method's own arithmetic around the networks (input
   scaling, error maps, scores) stays float32.

Memory traffic: int8 activations and weights (a quarter of float32's), one float32 read and
write at each network boundary; an int8 interleave reads and writes its planes' bytes once
(stride 2) or twice.

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
    convolution), followed by ``act`` when one was absorbed (a ReLU that followed the layer; the
    int8 engine fuses it): (N, C_in, h, w) -> (N, C_out, H, W). Features run in NHWC order on
    both sides (the weights permuted to match), so int8 tensors, which are NHWC, go in and come
    out without a copy."""

    def __init__(self, layer: nn.Module, out_shape: tuple[int, int, int]):
        super().__init__()
        w = layer.weight.detach()
        c_out, h, w_ = out_shape
        if isinstance(layer, nn.ConvTranspose2d):  # (C_in, C_out, kh, kw): x (N, C_in) @ W
            wm = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1).t()  # rows (kh, kw, C_out)
            b = None if layer.bias is None else layer.bias.detach().repeat(h * w_)
        else:  # (C_out, C_in, kh, kw): x (N, kh*kw*C_in) @ W^T, columns (kh, kw, C_in)
            wm = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)
            b = None if layer.bias is None else layer.bias.detach()
        self.linear = nn.Linear(wm.shape[1], wm.shape[0], bias=b is not None, dtype=w.dtype)
        with torch.no_grad():
            self.linear.weight.copy_(wm)
            if b is not None:
                self.linear.bias.copy_(b)
        self.linear.requires_grad_(False)
        self.out_shape = (c_out, h, w_)
        self.act = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.flatten, not Tensor.flatten: FX quantization keeps the function's output int8
        y = self.linear(torch.flatten(x.permute(0, 2, 3, 1), 1))
        if self.act is not None:
            y = self.act(y)
        c, h, w = self.out_shape
        return y.reshape(x.shape[0], h, w, c).permute(0, 3, 1, 2)


def _absorb_following_relu(parent: nn.Module, name: str) -> nn.ReLU | None:
    """If ``parent`` is a ``Sequential`` whose next layer after ``name`` (past ``Identity``
    layers, where BatchNorm was folded) is a ``ReLU``, that ReLU replaced by an ``Identity``
    in ``parent``, and a new one to run inside the layer; else None."""
    if not isinstance(parent, nn.Sequential):
        return None
    names = [n for n, _ in parent.named_children()]
    after = [n for n in names[names.index(name) + 1:] if type(getattr(parent, n)) is not nn.Identity]
    if not after or type(getattr(parent, after[0])) is not nn.ReLU:
        return None
    setattr(parent, after[0], nn.Identity())
    return nn.ReLU()


def _pointwise_as_linear_(root: nn.Module, called: set[int], inputs: dict[int, tuple]) -> None:
    """Replace, in place, each called convolution whose recorded input makes it a matrix
    product (see :class:`_PointwiseLinear`; a ReLU after it moves inside,
    :func:`_absorb_following_relu`); ``called``/``inputs`` learn the new modules."""
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
            new.act = _absorb_following_relu(parent, name)
            setattr(parent, name, new)
            called.update(id(m) for m in (new, new.linear, new.act) if m is not None)
            inputs[id(new)] = (x,)
            inputs[id(new.linear)] = (x.permute(0, 2, 3, 1).flatten(1),)


class _Interleave(nn.Module):
    """(N, C_out*sh*sw, Hc, Wc) phase planes of a transposed convolution of an (H, W) input ->
    its output (N, C_out, H_out, W_out): the phases put in place, rows from ``offset`` on.

    Plane channel (r_h s_w + r_w) C_out + o holds phase (r_h, r_w). Output row s_h m + c_h is
    plane row m + (c_h + o_h) // s_h of phase (c_h + o_h) % s_h (likewise columns). Where both
    maps are affine in c_h over [0, s_h) and in c_w (always at stride 2; at any stride where the
    offset is a multiple of it) and the planes are NHWC (what int8 convolutions return), the
    output is one ``as_strided`` view of the planes copied once (:meth:`_gather_nhwc`); else a
    reshape-permute copy and a crop. Only copies and views: exact on int8 tensors (same scale),
    so the int8 copies run it on int8 planes (:func:`_int8_through_interleaves_`)."""

    def __init__(self, kernel, stride, padding, output_padding, offset):
        super().__init__()
        self.kernel, self.stride, self.padding = tuple(kernel), tuple(stride), tuple(padding)
        self.output_padding, self.offset = tuple(output_padding), tuple(offset)
        # per dim: (plane row of phase 0, its step per output phase; phase index of 0, its step)
        self.affine = [self._affine_map(s, o) for s, o in zip(self.stride, self.offset)]

    @staticmethod
    def _affine_map(s: int, o: int):
        rows, phases = [(c + o) // s for c in range(s)], [(c + o) % s for c in range(s)]
        dr, dk = (rows[1] - rows[0], phases[1] - phases[0]) if s > 1 else (0, 0)
        if all(rows[c] == rows[0] + c * dr and phases[c] == phases[0] + c * dk for c in range(s)):
            return rows[0], dr, phases[0], dk
        return None

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
            if None not in self.affine and h_out % sh == 0 and w_out % sw == 0:
                return self._gather_nhwc(y, co, h_out, w_out)
            # int8 convolutions return NHWC: move runs of C_out values, stay NHWC
            t = y.permute(0, 2, 3, 1).reshape(n, hc, wc, sh, sw, co).permute(0, 1, 3, 2, 4, 5)
            out = t.reshape(n, hc * sh, wc * sw, co).permute(0, 3, 1, 2)
        else:
            t = y.reshape(n, sh, sw, co, hc, wc).permute(0, 3, 4, 1, 5, 2)
            out = t.reshape(n, co, hc * sh, wc * sw)
        return out[:, :, oh:oh + h_out, ow:ow + w_out]

    def _gather_nhwc(self, y: torch.Tensor, co: int, h_out: int, w_out: int) -> torch.Tensor:
        """Output element (n, s_h m + c_h, s_w q + c_w, o) of NHWC planes y sits at
        n sN + (m + r_h(c_h)) sH + (q + r_w(c_w)) sW + (k_h(c_h) s_w + k_w(c_w)) C_out + o, affine
        in (n, m, c_h, q, c_w, o): a view; one copy makes it NHWC."""
        (sh, sw), ((r0h, drh, k0h, dkh), (r0w, drw, k0w, dkw)) = self.stride, self.affine
        n = y.shape[0]
        s_n, _, s_h, s_w = y.stride()  # NHWC: channel stride 1
        size = (n, h_out // sh, sh, w_out // sw, sw, co)
        stride = (s_n, s_h, drh * s_h + dkh * sw * co, s_w, drw * s_w + dkw * co, 1)
        offset = y.storage_offset() + r0h * s_h + r0w * s_w + (k0h * sw + k0w) * co
        view = y.as_strided(size, stride, offset)
        return view.reshape(n, h_out, w_out, co).permute(0, 3, 1, 2)  # NCHW view of NHWC memory


class _ConvTransposeAsConv(nn.Module):
    """A ``ConvTranspose2d`` (groups 1, dilation 1, zero padding) as its phase decomposition.

    With o' = o + p = q s + r (0 <= r < s), the transposed convolution is
    y[o] = sum_j x[q - j] w[j s + r], j < J = ceil(k / s): for each phase r a stride-1
    correlation with the taps w[(J-1-u) s + r], u < J, over the input padded by J-1 (+ e, so
    that the planes cover the output window). One ``Conv2d`` computes all s_h s_w phases as
    output channels (r_h, r_w, C_out), followed by ``act`` when one was absorbed (a ReLU that
    followed the layer: elementwise, so it commutes with the interleave, and the int8 engine
    fuses it into the convolution); its interleave (:class:`_Interleave`) puts the phases in
    place and crops the output from row p + e s, column p_w + e_w s_w. Work:
    (H + J - 1 + 2e)(W + J_w - 1 + 2e_w) / (H W) times the transposed convolution's
    multiply-adds (for k 4, s 2, p 1: 1.56x at 4x4 inputs, 1.13x at 16x16)."""

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
        self.act = None

    @staticmethod
    def applies(layer: nn.Module) -> bool:
        return (type(layer) is nn.ConvTranspose2d and layer.groups == 1 and layer.dilation == (1, 1)
                and layer.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.act is not None:
            y = self.act(y)
        return self.interleave(y, x.shape[2], x.shape[3])


def _convtranspose_as_conv_(root: nn.Module, called: set[int], inputs: dict[int, tuple]) -> None:
    """Replace, in place, each called ``ConvTranspose2d`` that :class:`_ConvTransposeAsConv`
    applies to (a ReLU after it moves inside, before the interleave:
    :func:`_absorb_following_relu`); ``called``/``inputs`` learn the new modules."""
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if id(child) not in called or not _ConvTransposeAsConv.applies(child):
                continue
            new = _ConvTransposeAsConv(child)
            new.act = _absorb_following_relu(parent, name)
            if id(child) in inputs:
                inputs[id(new)] = inputs[id(child)]
            setattr(parent, name, new)
            called.update(id(m) for m in (new, new.conv, new.interleave, new.act) if m is not None)


def _int8_through_interleaves_(net: torch.fx.GraphModule) -> None:
    """In a converted int8 graph, hand each :class:`_Interleave` that sits between a dequantize
    and quantizes its int8 planes directly, and its int8 output to what the quantizes fed: it
    only copies and views (exact on int8, same scale), so the dequantize / quantize pair is
    pure cost."""
    graph, changed = net.graph, False
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(net.get_submodule(node.target), _Interleave):
            continue
        src = node.args[0]
        users = list(node.users)
        if not (isinstance(src, torch.fx.Node) and _is_dequantize(src) and users
                and all(u.op == "call_function" and u.target is torch.quantize_per_tensor
                        and u.args[0] is node and _reads_any_scale(net, u) for u in users)):
            continue
        node.replace_input_with(src, src.args[0])
        for u in users:
            u.replace_all_uses_with(node)
            graph.erase_node(u)
        if not src.users:
            graph.erase_node(src)
        changed = True
    if changed:
        graph.eliminate_dead_code()
        net.recompile()


_SCALE_KEEPING_MODULES = (nn.Identity, nn.ReLU, nn.Flatten)
_SCALE_KEEPING_FUNCTIONS = (torch.flatten, torch.narrow, torch.relu)
_SCALE_KEEPING_METHODS = ("reshape", "view", "permute", "flatten", "contiguous", "relu")


def _reads_any_scale(net: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    """Whether every consumer of ``node`` takes its input's scale from the tensor: an int8
    module (convolution, linear, ..., or tanh / sigmoid), or a view / ReLU whose consumers do.
    A concatenation or sum of int8 tensors wants its inputs at the scale the quantize before it
    gives them."""
    for u in node.users:
        if u.op == "call_function" and u.target is getattr:  # .shape: no values read
            continue
        if u.op == "call_module":
            mod = net.get_submodule(u.target)
            if (type(mod) in (nn.Tanh, nn.Sigmoid)  # int8 in, fixed output scale
                    or type(mod).__module__.startswith(("torch.ao.nn.quantized",
                                                        "torch.ao.nn.intrinsic.quantized"))):
                continue
            keeps = type(mod) in _SCALE_KEEPING_MODULES
        else:
            keeps = ((u.op == "call_function" and u.target in _SCALE_KEEPING_FUNCTIONS)
                     or (u.op == "call_method" and u.target in _SCALE_KEEPING_METHODS))
        if not (keeps and _reads_any_scale(net, u)):
            return False
    return True


def _is_dequantize(node: torch.fx.Node) -> bool:
    return ((node.op == "call_method" and node.target == "dequantize")
            or (node.op == "call_function" and node.target is torch.dequantize))


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
        # the interleave is an opaque float32 leaf here (made int8 after conversion where it can
        # be); any transposed convolution left (groups, dilation) stays float32: the engine's
        # int8 one is wrong (module doc)
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
            q = convert_fx(p)
            _int8_through_interleaves_(q)
            setattr(parent, name, q)
    # a float32 anchor as the first parameter: the methods take their input dtype and device
    # from their first parameter, which int8 modules no longer provide
    own = list(copy._parameters.items())
    copy._parameters.clear()
    copy.register_parameter("_anomgan_float32", nn.Parameter(torch.empty(0), requires_grad=False))
    copy._parameters.update(own)
    copy.requires_grad_(False)
    copy._anomgan_quantized = len(nets)
    return copy
