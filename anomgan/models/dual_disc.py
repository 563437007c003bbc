"""Dual-discriminator autoencoder GAN for imbalanced, semi-supervised anomaly detection
(Kim et al. 2020, docs/METHODS.md §4).

Generator: an autoencoder with U-Net skips (the paper's "modified U-Net"). log2(S) - 1
stride-2 4x4 convs (four at 32x32; the bottleneck is 2x2 at every size), as many transposed
convs; channels width * 2^i, capped at max_width. G_E(x) is the bottleneck.
Normalisation ``g_norm``: "none" (default), "batch" (the paper's BatchNorm) or "group";
default lr 1e-3 (paper 1e-4). Why: docs/METHODS.md §4; measurements:
benchmarks/accuracy/RESULTS_ACCURACY.md.
Discriminators D_n (normal) and D_a (anomaly): s = min(3, log2(S) - 2) stride-2 4x4 convs and
two stride-1 4x4 convs (padding 1), patch output; at 16x16 two stride-2 convs are used so the
patch map stays >= 1x1 (2x2 at 16x16 and 32x32).

Losses (images in [0, 1] units for the reconstruction terms; LSGAN terms on the patch maps):
  D:            (D(x) - 1)^2 + (D(G(x)) - 0)^2                       (D_n on normal batches,
                                                                      D_a on anomaly batches)
  normal x:     L_recon  = mean |x - G(x)|                           w_recon   1.5
                L_patch  = patch_topn_l1(x, G(x)) mean over batch    w_patch   1.5
                L_latent = mean |G_E(x) - G_E(G(x))|                 w_latent  0.5
                L_adv    = mean (D_n(G(x)) - 1)^2                    w_adv     0.5
  anomaly x:    L_adv_an = mean (D_a(G(x)) - 0)^2                    w_adv_an  1.0
                L_ABC    = mean_i -log(1 - exp(-e_i)),  e_i = mean |x_i - G(x_i)|, with e_i
                           clamped to >= abc_eps (1e-6) so the log stays finite  w_abc 0.5
Patch settings: anomgan.scoring.patches.patch_grid: the paper's patch 16, stride 8, n 3 at image
sizes >= 32; smaller images use patch = S // 2, stride = patch // 2 (8/4 at 16x16: the same 3x3
window grid as 16/8 at 32x32).
Each train_step trains on ONE of its two batches: the anomaly batch with probability
p_anomaly, drawn from a torch.Generator this method owns (seeded from torch's global RNG at
construction; its state is in the state_dict as ``_extra_state`` and in get_rng_state()).
score(x, scoring, backend) = patch_topn_l1(x, G(x)) (same patch settings), maps = per-pixel
|x - G(x)|.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validate import check_choice, check_real
from ..ops import patch_topn_l1, pixel_error_map
from ..scoring.config import ScoringConfig
from ..scoring.patches import patch_grid
from .base import Method, adam, frozen_params, log2_int, optimizer_step, register
from .networks import dcgan_init_, norm_layer


class UNetAutoencoder(nn.Module):
    """x in [-1, 1] (B, C, S, S) -> (G(x) in [-1, 1], bottleneck G_E(x))."""

    def __init__(self, image_size: int, channels: int, width: int = 8, max_width: int = 256,
                 skips: bool = True, norm: str = "batch"):
        super().__init__()
        depth = log2_int(image_size) - 1
        chs = [min(max_width, width * 2 ** i) for i in range(depth)]
        self.skips = skips
        self.down = nn.ModuleList()
        cin = channels
        for i, c in enumerate(chs):
            self.down.append(nn.Sequential(nn.Conv2d(cin, c, 4, 2, 1), norm_layer(norm if i > 0 else "none", c),
                                           nn.LeakyReLU(0.2, True)))
            cin = c
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):           # up[k] undoes down[depth-1-k]
            c_in = chs[i] * (2 if skips and i < depth - 1 else 1)
            if i == 0:
                self.up.append(nn.Sequential(nn.ConvTranspose2d(c_in, channels, 4, 2, 1),
                                             nn.Tanh()))
            else:
                self.up.append(nn.Sequential(nn.ConvTranspose2d(c_in, chs[i - 1], 4, 2, 1),
                                             norm_layer(norm, chs[i - 1]), nn.ReLU(True)))
        dcgan_init_(self)

    def encode(self, x: Tensor) -> Tensor:
        for layer in self.down:
            x = layer(x)
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = []
        for layer in self.down:
            x = layer(x)
            feats.append(x)
        z = x
        h = z
        for k, layer in enumerate(self.up):
            if k > 0 and self.skips:
                h = torch.cat([h, feats[len(feats) - 1 - k]], dim=1)
            h = layer(h)
        return h, z


class PatchDiscriminator(nn.Module):
    """x in [-1, 1] -> patch map (B, 1, h, w) of LSGAN outputs (real ~ 1)."""

    def __init__(self, image_size: int, channels: int, width: int = 8, max_width: int = 256):
        super().__init__()
        n_down = min(3, log2_int(image_size) - 2)
        chs = [min(max_width, width * 2 ** i) for i in range(n_down + 1)]
        layers: list[nn.Module] = []
        cin = channels
        for i in range(n_down):
            layers += [nn.Conv2d(cin, chs[i], 4, 2, 1), norm_layer("batch" if i > 0 else "none", chs[i]),
                       nn.LeakyReLU(0.2, True)]
            cin = chs[i]
        layers += [nn.Conv2d(cin, chs[n_down], 4, 1, 1), nn.BatchNorm2d(chs[n_down]),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(chs[n_down], 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def lsgan_d_loss(real_out: Tensor, fake_out: Tensor) -> Tensor:
    """mean (D(x) - 1)^2 + mean (D(G(x)) - 0)^2."""
    return (real_out - 1).pow(2).mean() + fake_out.pow(2).mean()


def recon_loss(x: Tensor, x_hat: Tensor) -> Tensor:
    """L_recon = mean |x - G(x)|."""
    return (x - x_hat).abs().mean()


def patch_loss(x: Tensor, x_hat: Tensor, patch: int, stride: int, n: int) -> Tensor:
    """L_patch = batch mean of the mean of the n largest patch-mean L1 errors."""
    return patch_topn_l1(x, x_hat, patch=patch, stride=stride, n=n)[0].mean()


def latent_loss(z: Tensor, z_rec: Tensor) -> Tensor:
    """L_latent = mean |G_E(x) - G_E(G(x))|."""
    return (z - z_rec).abs().mean()


def adv_loss(fake_out: Tensor, target: float) -> Tensor:
    """LSGAN generator loss mean (D(G(x)) - target)^2 (target 1 for D_n, 0 for D_a)."""
    return (fake_out - target).pow(2).mean()


def abc_loss(x: Tensor, x_hat: Tensor, eps: float = 1e-6) -> Tensor:
    """L_ABC = mean_i -log(1 - exp(-e_i)), e_i = mean |x_i - G(x_i)| clamped to >= eps."""
    e = (x - x_hat).abs().flatten(1).mean(dim=1).clamp_min(eps)
    return -torch.log(-torch.expm1(-e)).mean()


@register
class DualDiscriminatorGAN(Method):
    name = "dual-disc"
    uses_anomalies = "required"
    single_pass = True
    DEFAULTS = {"width": 8, "max_width": 256, "d_width": 8, "skips": True, "lr": 1e-3,
                "beta1": 0.5, "p_anomaly": 0.5, "patch": None, "patch_stride": None,
                "patch_n": 3, "w_recon": 1.5, "w_patch": 1.5, "w_latent": 0.5, "w_adv": 0.5,
                "w_adv_an": 1.0, "w_abc": 0.5, "abc_eps": 1e-6,
                "g_norm": "none"}
    LEGACY_DEFAULTS = {"g_norm": "batch"}   # files written before g_norm existed used BatchNorm

    def __init__(self, image_size: int, channels: int, **hparams):
        super().__init__(image_size, channels, **hparams)
        hp = self.hp
        check_choice("dual-disc", "g_norm", hp["g_norm"], ("batch", "group", "none"))
        check_real("dual-disc", "p_anomaly", hp["p_anomaly"], 0.0, 1.0)
        self.patch = patch_grid(image_size, image_size, hp["patch"], hp["patch_stride"],
                                hp["patch_n"])
        self.autoencoder = UNetAutoencoder(image_size, channels, hp["width"], hp["max_width"],
                                           hp["skips"], hp["g_norm"])
        self.disc_normal = PatchDiscriminator(image_size, channels, hp["d_width"],
                                              hp["max_width"])
        self.disc_anomaly = PatchDiscriminator(image_size, channels, hp["d_width"],
                                               hp["max_width"])
        self._rng = torch.Generator(device="cpu")
        self._rng.manual_seed(int(torch.randint(0, 2 ** 62, (1,)).item()))

    # the owned generator travels in the state_dict as "_extra_state"
    def get_extra_state(self):
        return self._rng.get_state()

    def set_extra_state(self, state) -> None:
        self._rng.set_state(state)

    def get_rng_state(self) -> dict[str, Tensor]:
        return {"batch_choice": self._rng.get_state()}

    def set_rng_state(self, state: dict[str, Tensor]) -> None:
        if set(state) != {"batch_choice"}:
            raise ValueError(f"dual-disc: rng state must have the key 'batch_choice', got "
                             f"{sorted(state)}")
        self._rng.set_state(state["batch_choice"])

    def make_optimizers(self, stage: str) -> dict[str, torch.optim.Optimizer]:
        self.check_stage(stage)
        lr, b1 = self.hp["lr"], self.hp["beta1"]
        return {"generator": adam(self.autoencoder.parameters(), lr, b1),
                "disc_normal": adam(self.disc_normal.parameters(), lr, b1),
                "disc_anomaly": adam(self.disc_anomaly.parameters(), lr, b1)}

    def train_step(self, stage, normal, anomalous, optimizers):
        self.check_stage(stage)
        self.check_images("normal", normal)
        self.check_images("anomalous", anomalous, allow_none=True)
        self.check_uses_anomalies(anomalous)
        self.train()
        if float(torch.rand((), generator=self._rng)) < self.hp["p_anomaly"]:
            return self._anomaly_step(anomalous, optimizers)
        return self._normal_step(normal, optimizers)

    def _normal_step(self, normal, opt):
        hp, G, D = self.hp, self.autoencoder, self.disc_normal
        x = self.to_model(normal)
        x_hat, z = G(x)
        d_loss = lsgan_d_loss(D(x), D(x_hat.detach()))
        optimizer_step(opt["disc_normal"], d_loss)

        xi, xi_hat = self.to_image(x), self.to_image(x_hat)
        recon = recon_loss(xi, xi_hat)
        patch = patch_loss(xi, xi_hat, *self.patch)
        latent = latent_loss(z, G.encode(x_hat))
        with frozen_params(D):
            adv = adv_loss(D(x_hat), 1.0)
        total = (hp["w_recon"] * recon + hp["w_patch"] * patch + hp["w_latent"] * latent
                 + hp["w_adv"] * adv)
        optimizer_step(opt["generator"], total)
        return {"anomaly_step": 0.0, "d_normal": d_loss.item(), "g_recon": recon.item(),
                "g_patch": patch.item(), "g_latent": latent.item(), "g_adv": adv.item(),
                "g_total": total.item()}

    def _anomaly_step(self, anomalous, opt):
        hp, G, D = self.hp, self.autoencoder, self.disc_anomaly
        x = self.to_model(anomalous)
        x_hat, _ = G(x)
        d_loss = lsgan_d_loss(D(x), D(x_hat.detach()))
        optimizer_step(opt["disc_anomaly"], d_loss)

        with frozen_params(D):
            adv_an = adv_loss(D(x_hat), 0.0)
        abc = abc_loss(self.to_image(x), self.to_image(x_hat), hp["abc_eps"])
        total = hp["w_adv_an"] * adv_an + hp["w_abc"] * abc
        optimizer_step(opt["generator"], total)
        return {"anomaly_step": 1.0, "d_anomaly": d_loss.item(), "g_adv_anomaly": adv_an.item(),
                "g_abc": abc.item(), "g_total": total.item()}

    @torch.no_grad()
    def score(self, x: Tensor, scoring: ScoringConfig | None = None, *,
              backend: str | None = None) -> tuple[Tensor, Tensor]:
        """(patch_topn_l1(x, G(x)) (B,), per-pixel |x - G(x)| (B, H, W)), float32, [0, 1] units;
        the patch settings are the training loss's (``self.patch``), ``scoring`` is not used."""
        self.check_images("x", x)
        with self.eval_mode():
            xm = self.to_model(x)
            xi, xi_hat = self.to_image(xm), self.to_image(self.autoencoder(xm)[0])
            p, s, n = self.patch
            scores, _ = patch_topn_l1(xi, xi_hat, patch=p, stride=s, n=n, backend=backend)
            maps = pixel_error_map(xi, xi_hat)
        return scores.float(), maps.float()
