"""Frozen inference copies of trained networks, for the latent search.

During a latent search (anomgan.scoring.search) the generator G and the discriminator's feature trunk
are fixed functions: only z moves. ``prepare_frozen`` turns a trained module into the cheapest
equivalent of its eval-mode self:

* a deep copy (the caller's module is never modified), in eval mode, every parameter with
  ``requires_grad=False`` -- autograd then computes no weight gradients, only the gradients
  that flow back to the input (the latent z);
* every BatchNorm that directly follows a convolution (Conv1d/2d/3d or ConvTranspose1d/2d/3d
  with groups=1) inside an ``nn.Sequential`` is folded into that convolution's weight and bias
  (eval-mode BatchNorm is an affine map per channel: W' = W * g / sqrt(v + eps),
  b' = (b - m) * g / sqrt(v + eps) + beta) and replaced by ``nn.Identity``;
* optionally channels_last weights (faster convolutions on most CPUs; the default on CPU) and
  torch.compile of chosen methods.

The copy computes what ``module.eval()`` computes, to floating-point rounding (the folding
reorders a few multiplications). BatchNorm modules that cannot be folded (not after a
convolution, or without running statistics) stay as they are, in eval mode.
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["prepare_frozen", "is_frozen", "fold_batchnorm_"]

_FROZEN_ATTR = "_anomgan_frozen"
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TCONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def is_frozen(module) -> bool:
    """True for a module returned by :func:`prepare_frozen`."""
    return bool(getattr(module, _FROZEN_ATTR, False))


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    if not isinstance(bn, _BNS) or bn.running_mean is None or bn.running_var is None:
        return False
    if isinstance(conv, _CONVS):
        pass
    elif isinstance(conv, _TCONVS):
        if conv.groups != 1:  # the weight layout (in, out/groups, ...) needs a regrouping
            return False
    else:
        return False
    return conv.out_channels == bn.num_features


def _fold_pair(conv: nn.Module, bn: nn.Module) -> None:
    transpose = isinstance(conv, _TCONVS)
    with torch.no_grad():
        w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                    bn.eps, bn.weight, bn.bias, transpose=transpose)
    conv.weight = nn.Parameter(w.detach().clone(), requires_grad=False)
    conv.bias = nn.Parameter(b.detach().clone(), requires_grad=False)


def fold_batchnorm_(module: nn.Module) -> int:
    """Fold, in place, every BatchNorm that directly follows a foldable convolution inside an
    ``nn.Sequential`` of ``module`` (the module must be in eval mode: the fold uses the running
    statistics). Returns the number of BatchNorm layers folded."""
    if module.training:
        raise ValueError("fold_batchnorm_: module must be in eval mode (folding uses the running "
                         "statistics, which a training-mode BatchNorm does not use)")
    folded = 0
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules.keys())
        for prev, cur in zip(names, names[1:]):
            conv, bn = seq._modules[prev], seq._modules[cur]
            if _foldable(conv, bn):
                _fold_pair(conv, bn)
                seq._modules[cur] = nn.Identity()
                folded += 1
    return folded


def prepare_frozen(module: nn.Module, *, fold_bn: bool = True, channels_last: bool | None = None,
                   compile: bool | Iterable[str] = False, device=None) -> nn.Module:
    """An equivalent frozen copy of ``module`` for inference-time latent search.

    module        : a trained ``nn.Module``; it is deep-copied and never modified.
    fold_bn       : fold BatchNorm into the preceding convolutions (see the module docstring).
    channels_last : store 4-d conv weights channels_last (None: yes on CPU, no elsewhere); the
                    activations then follow that layout, which oneDNN convolutions prefer.
    compile       : False; True to ``torch.compile`` the copy's ``forward``; or an iterable of
                    method names to compile (e.g. ``("forward", "features")``).
    device        : move the copy there first (None: stay).

    Returns the copy in eval mode with ``requires_grad=False`` on every parameter; its outputs
    equal ``module.eval()``'s to floating-point rounding, and gradients still flow through it
    to its inputs. Its result carries a marker (:func:`is_frozen`).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"prepare_frozen: module must be a torch.nn.Module, got {type(module).__name__}")
    frozen = copy.deepcopy(module)
    if device is not None:
        frozen = frozen.to(device)
    frozen.eval()
    frozen.requires_grad_(False)
    if fold_bn:
        fold_batchnorm_(frozen)
        frozen.requires_grad_(False)
    if channels_last is None:
        params = list(frozen.parameters())
        channels_last = bool(params) and params[0].device.type == "cpu"
    if channels_last:
        for m in frozen.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    if compile:
        names = ("forward",) if compile is True else tuple(compile)
        for name in names:
            fn = getattr(frozen, name, None)
            if not callable(fn):
                raise ValueError(f"prepare_frozen: compile names {name!r}, which is not a method "
                                 f"of {type(module).__name__}")
            setattr(frozen, name, torch.compile(fn, dynamic=False))
    setattr(frozen, _FROZEN_ATTR, True)
    return frozen
