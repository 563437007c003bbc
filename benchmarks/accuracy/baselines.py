"""The one-line baselines every real-data accuracy table carries, and the supervised one.

Inputs are float tensors (N, C, H, W) in [0, 1] (grayscale: C = 1; colour is averaged over
channels). Higher score = more anomalous.

* ``mean_dark``: 1 - mean intensity (a dark cell is a defective cell); ``mean_bright``: the
  mean intensity. Both signs are reported, since a baseline must not be handicapped by its sign.
* ``image_std``: the standard deviation of the image's pixels.
* ``median_residual_map``: |x - median_k(x)| per pixel (k x k median filter, reflect border);
  ``median_residual``: its max over the image (the image score).
* :func:`supervised_cnn`: what a user with the same labels would do: a small CNN classifier
  (4 stride-2 conv blocks, global average pool, linear) trained with binary cross-entropy on
  the same normal images against the same labelled defects (balanced batches, flips), its
  training length chosen on validation AUROC; the score is the defect logit.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from anomgan.scoring import metrics

MEDIAN_SIZE = 5


def gray(x: torch.Tensor) -> torch.Tensor:
    return x.float().mean(1)


def mean_dark(x: torch.Tensor) -> np.ndarray:
    return (1.0 - gray(x).mean((-2, -1))).numpy()


def mean_bright(x: torch.Tensor) -> np.ndarray:
    return gray(x).mean((-2, -1)).numpy()


def image_std(x: torch.Tensor) -> np.ndarray:
    return gray(x).flatten(1).std(1).numpy()


def median_residual_map(x: torch.Tensor, size: int = MEDIAN_SIZE) -> np.ndarray:
    """(N, H, W) float32: |x - median filter of x|, channel mean first."""
    from scipy.ndimage import median_filter

    g = gray(x).numpy()
    med = np.stack([median_filter(im, size=size, mode="reflect") for im in g])
    return np.abs(g - med).astype(np.float32)


def median_residual(x: torch.Tensor, size: int = MEDIAN_SIZE) -> np.ndarray:
    return median_residual_map(x, size).reshape(x.shape[0], -1).max(1)


IMAGE_BASELINES = {"mean intensity (dark)": mean_dark, "mean intensity (bright)": mean_bright,
                   "image std": image_std, "median-filter residual (max)": median_residual}


def image_baselines(x: torch.Tensor, y: np.ndarray) -> dict[str, float]:
    """AUROC of every one-line image baseline on images ``x`` with labels ``y`` (1 = defect)."""
    return {name: metrics.roc_auc(y, fn(x)) for name, fn in IMAGE_BASELINES.items()}


class SmallCNN(nn.Module):
    def __init__(self, channels: int, width: int = 16):
        super().__init__()
        layers, c = [], channels
        for w in (width, 2 * width, 4 * width, 8 * width):
            layers += [nn.Conv2d(c, w, 3, 2, 1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, 1)

    def forward(self, x):
        return self.head(self.features(x * 2 - 1).mean((-2, -1))).squeeze(1)


@torch.no_grad()
def _logits(net: nn.Module, x: torch.Tensor, bs: int = 128) -> np.ndarray:
    net.eval()
    out = torch.cat([net(x[i:i + bs]) for i in range(0, x.shape[0], bs)]).numpy()
    net.train()
    return out


def supervised_cnn(normal: torch.Tensor, defects: torch.Tensor, val: torch.Tensor, val_y: np.ndarray,
                   test: torch.Tensor, *, seed: int, steps: int = 1500, batch: int = 32,
                   check_every: int = 250, lr: float = 1e-3) -> dict:
    """Train :class:`SmallCNN` on ``normal`` (label 0) against ``defects`` (label 1), half of
    each batch from each; keep the weights with the best validation AUROC among the checks
    (every ``check_every`` steps); return {"val_auroc", "step", "test_scores"}."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SmallCNN(normal.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    best = (-1.0, 0, None)
    half = batch // 2
    for step in range(1, steps + 1):
        xn = normal[torch.randint(normal.shape[0], (half,), generator=g)]
        xa = defects[torch.randint(defects.shape[0], (half,), generator=g)]
        xb = torch.cat([xn, xa])
        flip = torch.rand(batch, 2, generator=g) < 0.5
        xb = torch.where(flip[:, 0, None, None, None], xb.flip(-1), xb)
        xb = torch.where(flip[:, 1, None, None, None], xb.flip(-2), xb)
        yb = torch.cat([torch.zeros(half), torch.ones(half)])
        loss = F.binary_cross_entropy_with_logits(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % check_every == 0 or step == steps:
            auc = metrics.roc_auc(val_y, _logits(net, val))
            if auc > best[0]:
                best = (auc, step, {k: v.clone() for k, v in net.state_dict().items()})
    net.load_state_dict(best[2])
    return {"val_auroc": best[0], "step": best[1], "test_scores": _logits(net, test)}
