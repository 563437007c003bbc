"""f-AnoGAN's izi_f encoder (Schlegl et al. 2019): with a trained generator G and discriminator
D frozen, train an encoder E (image -> z) so that G(E(x)) reconstructs x, in pixels and in D's
feature space. The same residual is the anomaly score of the encoder path, and E(x) is a warm
start for the latent search.

    A(x) = (1/N) ||x - G(E(x))||^2 + kappa (1/M) ||f(x) - f(G(E(x)))||^2

N = pixels x channels of an image, M = size of the feature layer f (D.features). Images in the
networks' range [-1, 1].
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn


def izif_residual(encoder: nn.Module, generator: nn.Module,
                  features: Callable[[Tensor], Tensor], x: Tensor,
                  kappa: float = 1.0) -> tuple[Tensor, Tensor]:
    """(A(x) per sample (B,), the reconstruction G(E(x)) (B, C, H, W)). x in [-1, 1].
    Differentiable w.r.t. the encoder (and anything else that requires grad)."""
    x_rec = generator(encoder(x))
    pixel = (x - x_rec).pow(2).flatten(1).mean(dim=1)
    feat = (features(x) - features(x_rec)).pow(2).flatten(1).mean(dim=1)
    return pixel + kappa * feat, x_rec


def encoder_loss(encoder: nn.Module, generator: nn.Module,
                 features: Callable[[Tensor], Tensor], x: Tensor, kappa: float = 1.0) -> Tensor:
    """izi_f training loss: the batch mean of :func:`izif_residual` (a scalar tensor).
    ``features`` is typically ``discriminator.features``; x in [-1, 1]."""
    return izif_residual(encoder, generator, features, x, kappa)[0].mean()
