"""Which examples form the batch at each position of a run: pure functions of (seed, position).

Because the batch at position k depends only on the seed and k, a resumed run only needs the
position to continue exactly where an interrupted one stopped (no iterator state to pickle), and
every DDP rank agrees on the global batch without communicating.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

import numpy as np

from tformer.errors import InputError


class BatchPlan(Protocol):
    """Maps a global batch position to the dataset indices of that batch."""

    def batch(self, position: int) -> list[int]: ...


class ShuffledBatches:
    """Fixed-size batches from a fresh random permutation each epoch (last partial dropped)."""

    def __init__(self, n_examples: int, batch_size: int, seed: int) -> None:
        if n_examples < batch_size:
            raise InputError(
                f"{n_examples} examples cannot fill one batch of {batch_size}; "
                "use a smaller batch_size or more data"
            )
        self.n_examples, self.batch_size, self.seed = n_examples, batch_size, seed
        self.batches_per_epoch = n_examples // batch_size

    @lru_cache(maxsize=2)  # noqa: B019 - one plan per run; the cache holds two epochs at most
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_examples)

    def batch(self, position: int) -> list[int]:
        epoch, index = divmod(position, self.batches_per_epoch)
        start = index * self.batch_size
        return self._permutation(epoch)[start : start + self.batch_size].tolist()


class BucketedBatches:
    """Batches of similar-length examples (less padding), in random order each epoch.

    Each epoch shuffles the examples, sorts them by length within pools of `pool_batches`
    batches, cuts the pools into batches of at most `max_tokens` padded tokens (and at most
    `batch_size` examples), and shuffles the batch order. How many batches the cut makes
    depends on the shuffle, so epochs differ in length and a position is found by counting
    the batches of the epochs before it.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        *,
        max_tokens: int | None = None,
        pool_batches: int = 50,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed = batch_size, seed
        self.max_tokens = max_tokens
        self.pool = pool_batches * batch_size
        self._epoch_sizes: list[int] = []  # batches in epochs 0, 1, ... as far as known
        self.batches_per_epoch = self._epoch_size(0)  # the first epoch's; others differ a little

    @lru_cache(maxsize=2)  # noqa: B019 - one plan per run; the cache holds two epochs at most
    def _epoch(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        batches: list[list[int]] = []
        for start in range(0, len(order), self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches.extend(self._cut(pool.tolist()))
        return [batches[i] for i in rng.permutation(len(batches))]

    def _cut(self, sorted_indices: list[int]) -> list[list[int]]:
        batches, current, longest = [], [], 0
        for i in sorted_indices:
            longest_if_added = max(longest, int(self.lengths[i]))
            too_many_tokens = (
                self.max_tokens is not None
                and current
                and longest_if_added * (len(current) + 1) > self.max_tokens
            )
            if len(current) == self.batch_size or too_many_tokens:
                batches.append(current)
                current, longest_if_added = [], int(self.lengths[i])
            current.append(i)
            longest = longest_if_added
        if current:
            batches.append(current)
        return batches

    def _epoch_size(self, epoch: int) -> int:
        while len(self._epoch_sizes) <= epoch:
            self._epoch_sizes.append(len(self._epoch(len(self._epoch_sizes))))
        return self._epoch_sizes[epoch]

    def batch(self, position: int) -> list[int]:
        epoch = 0
        while position >= self._epoch_size(epoch):
            position -= self._epoch_size(epoch)
            epoch += 1
        return self._epoch(epoch)[position]


class SequentialBatches:
    """Examples in order, the last batch possibly shorter: for evaluation."""

    def __init__(self, n_examples: int, batch_size: int) -> None:
        self.n_examples, self.batch_size = n_examples, batch_size
        self.batches_per_epoch = -(-n_examples // batch_size)

    def batch(self, position: int) -> list[int]:
        start = (position % self.batches_per_epoch) * self.batch_size
        return list(range(start, min(start + self.batch_size, self.n_examples)))
