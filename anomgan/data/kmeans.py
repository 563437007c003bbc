"""The k-means balanced sampler of Kim et al. (2020), section 3.5.

Each class of images (e.g. each anomaly type; one class when no labels are given) is clustered
with scikit-learn's KMeans on downscaled copies of the images (area-averaged to
``downscale x downscale``, all channels, flattened). An epoch then holds ``epoch_size`` indices:
the same number from every class and, within a class, the same number from every cluster
(remainders go to randomly chosen classes/clusters). A cluster asked for more indices than it
holds repeats its members (each of them ``floor`` or ``ceil`` of quota / size times), so rare
kinds of anomaly are over-sampled and common ones under-sampled. Everything is seeded; the
cluster assignments are part of :meth:`state_dict`, so a resumed run does not refit.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._validate import check_int
from .samplers import EpochBatchSampler, epoch_generator


class KMeansBalancedSampler(EpochBatchSampler):
    """Balanced index batches over ``images`` (N, C, H, W); see the module doc.

    ``labels``: optional (N,) integer class of each image; ``n_clusters``: clusters per class
    (at most the class size); ``epoch_size``: indices per epoch (default N); ``downscale``:
    side of the images fed to k-means; ``n_init``: KMeans restarts."""

    kind = "kmeans"

    def __init__(self, images: torch.Tensor, batch_size: int, *, labels: Any = None, n_clusters: int = 10,
                 epoch_size: int | None = None, downscale: int = 8, n_init: int = 3, seed: int = 0):
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1:
            raise ValueError(f"images must be a (N, C, H, W) tensor with N >= 1, got "
                             f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
        n = images.shape[0]
        if labels is None:
            labels = torch.zeros(n, dtype=torch.int64)
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.shape[0] != n or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor of shape ({n},), got {labels.dtype} {tuple(labels.shape)}")
        where = "KMeansBalancedSampler"
        self.n_clusters = check_int(where, "n_clusters", n_clusters, minimum=1)
        self.downscale = check_int(where, "downscale", downscale, minimum=1)
        self.n_init = check_int(where, "n_init", n_init, minimum=1)
        self.epoch_size = n if epoch_size is None else check_int(where, "epoch_size", epoch_size,
                                                                 minimum=1)
        super().__init__(n, batch_size, seed=seed, shuffle=True)
        self._images = images
        self.labels = labels.to(torch.int64).cpu()
        self.classes = [int(c) for c in torch.unique(self.labels).tolist()]
        self._clusters: torch.Tensor | None = None  # (N,) global cluster id, fitted lazily

    def __len__(self) -> int:
        return self.epoch_size

    # -- clustering -----------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> np.ndarray:
        """(N, C, H, W) -> (N, C * downscale**2) float64 features for k-means."""
        d = self.downscale
        small = F.adaptive_avg_pool2d(x.detach().to("cpu", torch.float32), (d, d))
        return small.reshape(x.shape[0], -1).to(torch.float64).numpy()

    def fit(self) -> torch.Tensor:
        """Cluster every class (seeded); returns the (N,) int64 global cluster ids."""
        from sklearn.cluster import KMeans

        clusters = torch.empty(self.n, dtype=torch.int64)
        offset = 0
        for ci, c in enumerate(self.classes):
            idx = torch.nonzero(self.labels == c).flatten()
            feats = self.features(self._images[idx])
            k = min(self.n_clusters, len(idx), len(np.unique(feats, axis=0)))
            if k <= 1:
                assign = np.zeros(len(idx), dtype=np.int64)
            else:
                km = KMeans(n_clusters=k, n_init=self.n_init, random_state=(self.seed * 1009 + ci) % (2 ** 32))
                assign = km.fit_predict(feats).astype(np.int64)
            # renumber so that ids are dense and ordered by first appearance (stable across sklearn versions)
            _, first, inv = np.unique(assign, return_index=True, return_inverse=True)
            order = np.argsort(np.argsort(first))
            clusters[idx] = torch.from_numpy(order[inv.reshape(-1)] + offset)
            offset += len(first)
        self._clusters = clusters
        return clusters

    def set_clusters(self, clusters: torch.Tensor) -> None:
        """Use these (N,) int64 cluster ids instead of fitting (e.g. another process's fit)."""
        if not isinstance(clusters, torch.Tensor) or clusters.shape != (self.n,) or clusters.dtype != torch.int64:
            raise ValueError(f"clusters must be an int64 tensor of shape ({self.n},)")
        for c in self.classes:
            ids = torch.unique(clusters[self.labels == c])
            if bool(torch.isin(ids, clusters[self.labels != c]).any()):
                raise ValueError(f"clusters: a cluster spans class {c} and another class")
        self._clusters = clusters.clone()
        self._cache = None

    @property
    def clusters(self) -> torch.Tensor:
        if self._clusters is None:
            self.fit()
        return self._clusters

    # -- epochs ---------------------------------------------------------------------------
    def epoch_indices(self, epoch: int) -> torch.Tensor:
        g = epoch_generator(self.seed, epoch, salt=1)
        clusters = self.clusters
        per_class = _split(self.epoch_size, len(self.classes), g)
        out = []
        for c, quota in zip(self.classes, per_class):
            members = clusters[self.labels == c]
            ids = torch.unique(members)
            for cid, q in zip(ids.tolist(), _split(quota, len(ids), g)):
                if q == 0:
                    continue
                pool = torch.nonzero(clusters == cid).flatten()
                reps = -(-q // len(pool))
                picks = torch.cat([pool[torch.randperm(len(pool), generator=g)] for _ in range(reps)])[:q]
                out.append(picks)
        idx = torch.cat(out)
        return idx[torch.randperm(len(idx), generator=g)]

    # -- checkpointing --------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "n_clusters": self.n_clusters, "epoch_size": self.epoch_size,
                "downscale": self.downscale, "classes": self.classes}

    def state_dict(self) -> dict[str, Any]:
        """Identity, position and the cluster assignments (an int64 tensor under "clusters")."""
        return {**super().state_dict(), "clusters": self.clusters.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            self.set_clusters(state.get("clusters"))
        except ValueError as exc:
            raise ValueError(f"sampler state: {exc}") from None


def _split(total: int, parts: int, g: torch.Generator) -> list[int]:
    """``total`` split into ``parts`` near-equal ints; the +1 remainders go to random parts."""
    base, rem = divmod(total, parts)
    out = [base] * parts
    for i in torch.randperm(parts, generator=g)[:rem].tolist():
        out[i] += 1
    return out
