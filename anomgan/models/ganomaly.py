"""GANomaly (Akcay et al. 2018, docs/METHODS.md §3): encoder-decoder-encoder generator,
feature-matching adversarial loss, trained on normal images only.

    x -> G_E -> z -> G_D -> x_hat -> E -> z_hat
    L_adv = ||f(x) - f(x_hat)||_2   (mean of squares, f = D.features)       weight w_adv = 1
    L_con = ||x - x_hat||_1          (mean of absolute values)               weight w_con = 50
    L_enc = ||z - z_hat||_2          (mean of squares)                       weight w_enc = 1
    L_D   = (BCE(D(x), 1) + BCE(D(x_hat), 0)) / 2; D is re-initialised when L_D < 1e-5
            (as in the authors' code), so it never stalls the generator.
Images in [-1, 1] inside the networks.

score(x) = mean over latent units of |z - z_hat| (the paper's ||z - z_hat||_1 divided by z_dim;
same ranking). No min-max scaling over the batch: a score depends on its image only.
maps = per-pixel |x - x_hat| (mean over channels, [0, 1] image units).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import pixel_error_map
from ..scoring.config import ScoringConfig
from .base import Method, adam, frozen_params, optimizer_step, register
from .networks import Discriminator, Encoder, Generator, dcgan_init_


def adversarial_loss(f_real: Tensor, f_fake: Tensor) -> Tensor:
    """L_adv = mean (f(x) - f(x_hat))^2."""
    return (f_real - f_fake).pow(2).mean()


def contextual_loss(x: Tensor, x_hat: Tensor) -> Tensor:
    """L_con = mean |x - x_hat|."""
    return (x - x_hat).abs().mean()


def latent_loss(z: Tensor, z_hat: Tensor) -> Tensor:
    """L_enc = mean (z - z_hat)^2."""
    return (z - z_hat).pow(2).mean()


def generator_loss(f_real, f_fake, x, x_hat, z, z_hat, w_adv=1.0, w_con=50.0, w_enc=1.0):
    """(total, L_adv, L_con, L_enc) with total = w_adv L_adv + w_con L_con + w_enc L_enc."""
    adv, con, enc = adversarial_loss(f_real, f_fake), contextual_loss(x, x_hat), \
        latent_loss(z, z_hat)
    return w_adv * adv + w_con * con + w_enc * enc, adv, con, enc


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """(BCE(D(x), real) + BCE(D(x_hat), fake)) / 2 on logits."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return (real + fake) / 2


def anomaly_score(z: Tensor, z_hat: Tensor) -> Tensor:
    """A(x) = mean over latent units of |z - z_hat|, (B,)."""
    return (z - z_hat).abs().flatten(1).mean(dim=1)


@register
class GANomaly(Method):
    name = "ganomaly"
    uses_anomalies = "no"
    single_pass = True
    #: networks sized like dual-disc's for the CPU (width 16, at most 64 channels, z 64: about 1.8x
    #: a dual-disc step at 64x64; MNIST protocol 1 97.3 AUROC, RESULTS_ACCURACY.md). The paper's
    #: sizes (z_dim 100, width 64, max_width 512) cost ~20x a dual-disc step on a CPU: pass them
    #: as hparams on a GPU. Files and checkpoints store every hparam, so this default only
    #: affects new runs.
    DEFAULTS = {"z_dim": 64, "width": 16, "max_width": 64, "norm": "batch", "lr": 2e-4,
                "beta1": 0.5, "w_adv": 1.0, "w_con": 50.0, "w_enc": 1.0}

    def __init__(self, image_size: int, channels: int, **hparams):
        super().__init__(image_size, channels, **hparams)
        hp = self.hp
        self.z_dim = int(hp["z_dim"])
        args = (image_size, channels, hp["width"], hp["max_width"], hp["norm"])
        self.encoder = Encoder(self.z_dim, *args)            # G_E
        self.decoder = Generator(self.z_dim, *args)          # G_D
        self.encoder2 = Encoder(self.z_dim, *args)           # E
        self.discriminator = Discriminator(*args)

    @property
    def generator(self):
        """G_D: z (B, z_dim) -> image in [-1, 1]."""
        return self.decoder

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x in [-1, 1] -> (x_hat, z, z_hat)."""
        z = self.encoder(x)
        x_hat = self.decoder(z)
        return x_hat, z, self.encoder2(x_hat)

    def make_optimizers(self, stage: str) -> dict[str, torch.optim.Optimizer]:
        self.check_stage(stage)
        lr, b1 = self.hp["lr"], self.hp["beta1"]
        g_params = [*self.encoder.parameters(), *self.decoder.parameters(),
                    *self.encoder2.parameters()]
        return {"generator": adam(g_params, lr, b1),
                "discriminator": adam(self.discriminator.parameters(), lr, b1)}

    def train_step(self, stage, normal, anomalous, optimizers):
        self.check_stage(stage)
        self.check_images("normal", normal)
        self.check_uses_anomalies(anomalous)
        self.train()
        hp, D = self.hp, self.discriminator
        x = self.to_model(normal)
        x_hat, z, z_hat = self(x)

        with frozen_params(D):
            f_real = D.features(x)
            f_fake = D.features(x_hat)
        g_total, adv, con, enc = generator_loss(f_real, f_fake, x, x_hat, z, z_hat,
                                                hp["w_adv"], hp["w_con"], hp["w_enc"])
        optimizer_step(optimizers["generator"], g_total)

        d_loss = discriminator_loss(D(x), D(x_hat.detach()))
        optimizer_step(optimizers["discriminator"], d_loss)
        reinit = d_loss.item() < 1e-5
        if reinit:
            dcgan_init_(D)
        return {"g_total": g_total.item(), "g_adv": adv.item(), "g_con": con.item(),
                "g_enc": enc.item(), "d_loss": d_loss.item(), "d_reinit": float(reinit)}

    @torch.no_grad()
    def score(self, x: Tensor, scoring: ScoringConfig | None = None, *,
              backend: str | None = None) -> tuple[Tensor, Tensor]:
        """(||z - z_hat||_1 / z_dim (B,), per-pixel |x - x_hat| maps (B, H, W)), float32;
        a single pass: ``scoring`` and ``backend`` are not used."""
        self.check_images("x", x)
        with self.eval_mode():
            xm = self.to_model(x)
            x_hat, z, z_hat = self(xm)
            maps = pixel_error_map(self.to_image(xm), self.to_image(x_hat))
        return anomaly_score(z, z_hat).float(), maps.float()
