"""Latent-search scoring, shared by the GAN methods (``anogan``, ``noisy-gan``).

A method that scores by latent search hands its generator G, its discriminator's feature layer
f, its z size and (optionally) its encoder E to :class:`LatentSearchScorer`, which returns, for
model-size images x (B, C, s, s) in [0, 1]:

* scores (B,) float32: the AnoGAN loss L(z*) at the searched z* (docs/METHODS.md §1), with
  ``search_steps`` Adam steps on AnoGAN's learning-rate schedule scaled to that count (G and f
  in ``search_precision``'s dtype during the steps, the score in float32); 0 steps scores the
  start itself;
* maps (B, s, s) float32: |x − G(z*)| averaged over channels, in [0, 1] image units.

Starts: ``search_restarts`` per image; restart 0 is E(x) when an encoder is given (f-AnoGAN
warm start), the others fixed N(0, I) draws seeded by ``search_seed`` (the same for every image,
so a score never depends on the batch). ``search_steps=0`` needs the encoder (ValueError
without one: a fixed random start scores nothing about the image). The frozen inference copies of G and f (BatchNorm
folded, :mod:`anomgan.scoring.frozen`) are made once and remade only when the networks'
weights change.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops import pixel_error_map
from .config import ScoringConfig
from .frozen import prepare_frozen
from .search import latent_search, scaled_schedule


def _weights_key(*modules: nn.Module):
    """Changes whenever a parameter or buffer of the modules is replaced or modified in place."""
    try:
        return tuple((t.data_ptr(), t._version) for m in modules
                     for t in (*m.parameters(), *m.buffers()))
    except RuntimeError:  # inference tensors keep no version counter: never reuse a copy
        return object()


class LatentSearchScorer:
    """Scores images by latent search over a method's networks (see the module doc)."""

    def __init__(self):
        self._key = None
        self._frozen: tuple[nn.Module, nn.Module] | None = None

    def frozen(self, generator: nn.Module, discriminator: nn.Module):
        """(G, D) inference copies, remade when the originals' weights changed."""
        key = _weights_key(generator, discriminator)
        if self._frozen is None or key != self._key:
            self._frozen = (prepare_frozen(generator), prepare_frozen(discriminator))
            self._key = key
        return self._frozen

    def starts(self, xm: torch.Tensor, z_dim: int, cfg: ScoringConfig,
               encoder: nn.Module | None) -> torch.Tensor:
        """(B, restarts, z_dim) start latents for images xm in the networks' range."""
        gen = torch.Generator().manual_seed(cfg.search_seed)
        fixed = torch.randn(cfg.search_restarts, z_dim, generator=gen).to(xm)
        z0 = fixed.unsqueeze(0).expand(xm.shape[0], -1, -1).clone()
        if encoder is not None:
            with torch.no_grad():
                z0[:, 0] = encoder(xm).reshape(xm.shape[0], -1)
        return z0

    def score(self, x: torch.Tensor, *, generator: nn.Module, discriminator: nn.Module,
              z_dim: int, to_model, to_image, cfg: ScoringConfig, encoder: nn.Module | None = None,
              backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (B,), maps (B, s, s)) of images x in [0, 1]; ``to_model``/``to_image`` map
        [0, 1] images to the networks' range and back."""
        if cfg.search_steps == 0 and encoder is None:
            raise ValueError(
                "search_steps=0 scores the encoder's start E(x) without a search, but this "
                "method's encoder stage has not been trained: train it, or score with a search "
                "(e.g. ScoringConfig(search_steps=500), AnoGAN's)")
        frozen_g, frozen_d = self.frozen(generator, discriminator)
        xm = to_model(x)
        z0 = self.starts(xm, z_dim, cfg, encoder)
        res = latent_search(frozen_g, frozen_d.features, xm, steps=cfg.search_steps,
                            lr=scaled_schedule(cfg.search_steps), lam=cfg.search_lam, z0=z0,
                            restarts=cfg.search_restarts, reduction=cfg.search_reduction,
                            backend=backend, compute_dtype=cfg.search_compute_dtype(xm))
        recon = to_image(res.recon.detach())
        maps = pixel_error_map(x, recon.to(x))
        return res.loss.detach().float(), maps.float()
