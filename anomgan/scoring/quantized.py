"""int8 inference copies of single-pass methods, for CPU scoring (``Detector.compile(dtype=torch.qint8)``).

Algorithm: post-training static quantization with PyTorch's FX flow on the ``x86`` engine
(oneDNN / FBGEMM int8 kernels with VNNI where the CPU has it).

1. An inference copy of the method (:func:`anomgan.scoring.compiled.inference_copy` without the
   CPU layer rewrites: BatchNorm folded, eval mode, frozen), so the int8 graph quantizes plain
   ``Conv2d`` / ``ConvTranspose2d`` / ``Linear`` layers. A convolution that, on the inputs
   scoring gives it, is a matrix product (a DCGAN encoder's head: kernel = input size; a DCGAN
   generator's first layer: a transposed convolution of a 1x1 input) becomes an ``nn.Linear``
   (:class:`_PointwiseLinear`), which the int8 engine runs far faster.
2. The *networks* to quantize are the largest sub-modules that FX can trace symbolically and
   that the method's ``score`` calls: the methods' networks check their input shapes in Python,
   which FX cannot trace, so the search descends from the method's direct children into their
   children until a module traces (a ``Sequential`` trunk, a convolution).
3. Each such network is prepared with observers (per-tensor affine uint8 activations,
   per-channel int8 weights where the engine supports them, per-tensor for transposed
   convolutions), the method's own ``score`` runs on the calibration images, and each network
   is converted to int8 modules: inside a network activations stay int8 from layer to layer
   (quantized LeakyReLU/ReLU, fused conv + ReLU), and are dequantized at its boundary. The
   method's own arithmetic around the networks (input scaling, error maps, scores) stays float32.

Memory traffic: int8 activations and weights (a quarter of float32's), plus one float32 read
and write at each network boundary.

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


def _traces(module: nn.Module) -> bool:
    try:
        torch.fx.symbolic_trace(module)
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
        return self.linear(x.flatten(1)).reshape(x.shape[0], *self.out_shape)


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
    nets = traceable_networks(copy, called)
    if not nets:
        raise ValueError(f"compile(dtype=torch.qint8): found no traceable network in "
                         f"{type(method).__name__} to quantize")
    torch.backends.quantized.engine = ENGINE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantization's deprecation notices (torch >= 2.5)
        prepared = []
        for parent, name, net in nets:
            p = prepare_fx(net, get_default_qconfig_mapping(ENGINE), inputs[id(net)])
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
