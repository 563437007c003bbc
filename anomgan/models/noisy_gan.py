"""Noisy-data GAN (Kimura & Yanagihara 2018) and AnoGAN (Schlegl et al. 2017) training, plus the
f-AnoGAN izi_f encoder stage (Schlegl et al. 2019).

Discriminator objective (maximised by D, docs/METHODS.md §2.1):
    V'(D, G) = gamma * (E_x log D(x) + E_z log(1 - D(G(z)))) + (1 - gamma) * E_an log(1 - D(x_an))
The anomaly images are one more kind of fake. The generator is non-saturating:
    L_G = -E_z log D(G(z)).
With gamma = 1, or in a step without an anomaly batch, this is exactly AnoGAN's (DCGAN's) game
(the gamma factor is dropped then, not just the anomaly term, so the loss is AnoGAN's exactly).

gamma: default 0.9 (the paper's value is not in the available text). Why: docs/METHODS.md §2.2;
measurements: benchmarks/accuracy/RESULTS_ACCURACY.md.

Stages: "gan" (G and D), then "encoder" (izi_f encoder, G and D frozen in eval mode).
score(x, scoring): the AnoGAN latent-search loss (anomgan.scoring.latent, warm-started by the
encoder once its stage has trained), maps = per-pixel |x - G(z*)|. encoder_score(x): the izi_f
residual of the encoder path in one pass (needs the encoder stage), maps = |x - G(E(x))|. Maps
are means over channels, in [0, 1] image units.

Option ``progressive=True``: Karras et al. progressive growing (anomgan.models.progressive) from
``start_size`` to image_size with ``fade_steps``/``stable_steps`` per resolution; the step
counter ``gan_step`` is a buffer, so resuming from a state_dict continues the schedule.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validate import check_real
from ..ops import pixel_error_map
from ..scoring.config import ScoringConfig
from ..scoring.latent import LatentSearchScorer
from .base import Method, adam, frozen_params, optimizer_step, register
from .encoder import encoder_loss, izif_residual
from .networks import Discriminator, Encoder, Generator
from .progressive import (ProgressiveDiscriminator, ProgressiveGenerator, ProgressiveSchedule,
                          fade_images)


def log_d(logits: Tensor) -> Tensor:
    """log D(x) = log sigmoid(logits), stable."""
    return -F.softplus(-logits)


def log_one_minus_d(logits: Tensor) -> Tensor:
    """log(1 - D(x)) = log sigmoid(-logits), stable."""
    return -F.softplus(logits)


def gan_value(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """V(D, G) = E log D(x) + E log(1 - D(G(z)))."""
    return log_d(real_logits).mean() + log_one_minus_d(fake_logits).mean()


def noisy_value(real_logits: Tensor, fake_logits: Tensor, anomaly_logits: Tensor | None,
                gamma: float) -> Tensor:
    """V'(D, G) = gamma V(D, G) + (1 - gamma) E_an log(1 - D(x_an)); V(D, G) when there is no
    anomaly batch (anomaly_logits None)."""
    v = gan_value(real_logits, fake_logits)
    if anomaly_logits is None:
        return v
    return gamma * v + (1 - gamma) * log_one_minus_d(anomaly_logits).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor,
                       anomaly_logits: Tensor | None, gamma: float) -> Tensor:
    """What D minimises: -V'(D, G)."""
    return -noisy_value(real_logits, fake_logits, anomaly_logits, gamma)


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss -E log D(G(z))."""
    return -log_d(fake_logits).mean()


@register
class NoisyGAN(Method):
    name = "noisy-gan"
    uses_anomalies = "optional"
    DEFAULTS = {
        "z_dim": 100, "width": 64, "max_width": 512, "norm": "batch",
        "lr": 2e-4, "beta1": 0.5, "gamma": 0.9, "kappa": 1.0,
        "progressive": False, "start_size": 8, "fade_steps": 500, "stable_steps": 500,
    }

    def __init__(self, image_size: int, channels: int, **hparams):
        super().__init__(image_size, channels, **hparams)
        hp = self.hp
        check_real(type(self).__name__, "gamma", self.gamma, 0.0, 1.0, lo_open=True)
        self.z_dim = int(hp["z_dim"])
        w, mw = hp["width"], hp["max_width"]
        if hp["progressive"]:
            self.schedule = ProgressiveSchedule(hp["start_size"], image_size, hp["fade_steps"],
                                                hp["stable_steps"])
            self.generator = ProgressiveGenerator(self.z_dim, image_size, channels, w, mw,
                                                  start_size=hp["start_size"])
            self.discriminator = ProgressiveDiscriminator(image_size, channels, w, mw,
                                                          start_size=hp["start_size"])
        else:
            self.schedule = None
            self.generator = Generator(self.z_dim, image_size, channels, w, mw, hp["norm"])
            self.discriminator = Discriminator(image_size, channels, w, mw, hp["norm"])
        self.encoder = Encoder(self.z_dim, image_size, channels, w, mw, hp["norm"])
        self.register_buffer("gan_step", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("encoder_trained", torch.tensor(False))
        self._scorer = LatentSearchScorer()  # frozen inference copies for the latent search

    @property
    def gamma(self) -> float:
        return self.hp["gamma"]

    def stages(self) -> list[str]:
        return ["gan", "encoder"]

    def make_optimizers(self, stage: str) -> dict[str, torch.optim.Optimizer]:
        self.check_stage(stage)
        lr, b1 = self.hp["lr"], self.hp["beta1"]
        if stage == "gan":
            return {"generator": adam(self.generator.parameters(), lr, b1),
                    "discriminator": adam(self.discriminator.parameters(), lr, b1)}
        return {"encoder": adam(self.encoder.parameters(), lr, b1)}

    def sample_z(self, n: int) -> Tensor:
        """n latent vectors z ~ N(0, I) from torch's global RNG, on the parameters' device."""
        device, dtype = self._param_device_dtype()
        return torch.randn(n, self.z_dim, device=device, dtype=dtype)

    def _stage_images(self, x: Tensor | None) -> Tensor | None:
        """[0, 1] images -> [-1, 1] at the current progressive stage (faded)."""
        if x is None:
            return None
        x = self.to_model(x)
        if self.schedule is not None:
            x = fade_images(x, self.generator.resolution, self.generator.alpha)
        return x

    def _generate(self, z: Tensor) -> Tensor:
        if self.schedule is not None:
            return self.generator(z, native=True)
        return self.generator(z)

    def train_step(self, stage, normal, anomalous, optimizers):
        self.check_stage(stage)
        self.check_images("normal", normal)
        self.check_images("anomalous", anomalous, allow_none=True)
        self.check_uses_anomalies(anomalous)
        if stage == "gan":
            return self._gan_step(normal, anomalous, optimizers)
        return self._encoder_step(normal, optimizers)

    def _gan_step(self, normal, anomalous, opt):
        self.train()
        if self.schedule is not None:
            res, alpha = self.schedule.stage(int(self.gan_step))
            self.generator.set_stage(res, alpha)
            self.discriminator.set_stage(res, alpha)
        G, D = self.generator, self.discriminator
        x = self._stage_images(normal)
        x_an = self._stage_images(anomalous)
        fake = self._generate(self.sample_z(x.shape[0]))

        real_logits = D(x)
        fake_logits = D(fake.detach())
        an_logits = D(x_an) if x_an is not None else None
        d_loss = discriminator_loss(real_logits, fake_logits, an_logits, self.gamma)
        optimizer_step(opt["discriminator"], d_loss)

        with frozen_params(D):
            g_loss = generator_loss(D(fake))
        optimizer_step(opt["generator"], g_loss)
        self.gan_step += 1
        out = {"d_loss": d_loss.item(), "g_loss": g_loss.item(),
               "d_real": torch.sigmoid(real_logits).mean().item(),
               "d_fake": torch.sigmoid(fake_logits).mean().item()}
        if an_logits is not None:
            out["d_anomaly"] = torch.sigmoid(an_logits).mean().item()
        if self.schedule is not None:
            out["resolution"] = float(self.generator.resolution)
            out["alpha"] = self.generator.alpha
        return out

    def _encoder_step(self, normal, opt):
        self.generator.eval()
        self.discriminator.eval()
        self.encoder.train()
        x = self.to_model(normal)
        with frozen_params(self.generator, self.discriminator):
            loss = encoder_loss(self.encoder, self.generator, self.discriminator.features, x,
                                self.hp["kappa"])
        optimizer_step(opt["encoder"], loss)
        self.encoder_trained.fill_(True)
        return {"encoder_loss": loss.item()}

    def score(self, x: Tensor, scoring: ScoringConfig | None = None, *,
              backend: str | None = None) -> tuple[Tensor, Tensor]:
        """AnoGAN latent-search scores (B,) and per-pixel |x - G(z*)| maps (B, H, W), float32
        (:class:`anomgan.scoring.latent.LatentSearchScorer` with ``scoring``'s search settings;
        restart 0 starts from E(x) once the encoder stage has trained)."""
        self.check_images("x", x)
        with self.eval_mode():
            return self._scorer.score(
                x, generator=self.generator, discriminator=self.discriminator, z_dim=self.z_dim,
                to_model=self.to_model, to_image=self.to_image, cfg=scoring or ScoringConfig(),
                encoder=self.encoder if bool(self.encoder_trained) else None, backend=backend)

    @torch.no_grad()
    def encoder_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """f-AnoGAN izi_f scores A(x) (B,) and per-pixel |x - G(E(x))| maps (B, H, W), float32:
        one pass, no search (needs the 'encoder' stage; RuntimeError before)."""
        self.check_images("x", x)
        if not bool(self.encoder_trained):
            raise RuntimeError(f"{type(self).__name__}.encoder_score needs the 'encoder' stage "
                               "to be trained first (or use score, the latent search)")
        with self.eval_mode():
            xm = self.to_model(x)
            a, x_rec = izif_residual(self.encoder, self.generator, self.discriminator.features,
                                     xm, self.hp["kappa"])
            maps = pixel_error_map(self.to_image(xm), self.to_image(x_rec))
        return a.float(), maps.float()


@register
class AnoGAN(NoisyGAN):
    """AnoGAN training: the noisy-data GAN with gamma = 1 (no anomaly term)."""
    name = "anogan"
    uses_anomalies = "no"
    DEFAULTS = {k: v for k, v in NoisyGAN.DEFAULTS.items() if k != "gamma"}

    @property
    def gamma(self) -> float:
        return 1.0
