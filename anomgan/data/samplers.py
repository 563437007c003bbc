"""Seeded, resumable batch samplers for the training loop.

A sampler is an endless stream of index batches of a fixed size. The stream is the
concatenation of *epochs*; epoch ``e`` is a list of indices drawn by :meth:`epoch_indices` from
a ``torch.Generator`` seeded by (seed, e) alone, so the state is just the number of indices
consumed so far: :meth:`state_dict` / :meth:`load_state_dict` make a resumed stream continue
exactly where it stopped. Every batch is full; a batch may straddle two epochs (so a
data set smaller than the batch is fine).
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from .._validate import check_int

_MASK63 = (1 << 63) - 1


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    """A CPU torch.Generator seeded from (seed, epoch, salt) only (splitmix64-style mix)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(salt) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    z ^= z >> 31
    z = (z * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z ^= z >> 29
    g = torch.Generator()
    g.manual_seed(z & _MASK63)
    return g


class EpochBatchSampler:
    """Uniform shuffling of ``range(n)``: each epoch is a fresh permutation (or ``range(n)``
    itself when ``shuffle=False``); batches of ``batch_size`` indices (int64 CPU tensors)."""

    kind = "epoch"

    def __init__(self, n: int, batch_size: int, *, seed: int = 0, shuffle: bool = True):
        self.n = check_int("EpochBatchSampler", "n", n, minimum=1)
        self.batch_size = check_int("EpochBatchSampler", "batch_size", batch_size, minimum=1)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.consumed = 0
        self._cache: tuple[int, torch.Tensor] | None = None

    # -- what one epoch holds -------------------------------------------------------------
    def __len__(self) -> int:
        """Indices per epoch."""
        return self.n

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=epoch_generator(self.seed, epoch))

    # -- the stream -----------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.consumed // len(self)

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self) // self.batch_size)

    def _epoch(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self.epoch_indices(epoch))
        return self._cache[1]

    def next_batch(self) -> torch.Tensor:
        """The next ``batch_size`` indices (int64, CPU); advances the state."""
        parts, need, length = [], self.batch_size, len(self)
        while need:
            e, pos = divmod(self.consumed, length)
            take = min(need, length - pos)
            parts.append(self._epoch(e)[pos:pos + take])
            self.consumed += take
            need -= take
        return torch.cat(parts) if len(parts) > 1 else parts[0].clone()

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.next_batch()

    # -- checkpointing --------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": self.n, "batch_size": self.batch_size, "seed": self.seed,
                "shuffle": self.shuffle}

    def state_dict(self) -> dict[str, Any]:
        """JSON-able dict (subclasses may add tensors) describing the sampler and its position."""
        return {**self._identity(), "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; raises ValueError when it belongs to a different sampler
        (another kind, data size, batch size or seed)."""
        mine = self._identity()
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            diff = {k: (theirs[k], mine[k]) for k in mine if theirs[k] != mine[k]}
            raise ValueError(f"sampler state does not match this sampler: (saved, current) = {diff}")
        consumed = state.get("consumed")
        self.consumed = check_int("EpochBatchSampler", "state['consumed']", consumed, minimum=0)
        self._cache = None
