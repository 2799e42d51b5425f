"""BatchStream: the batch at any position of a run, for this process's share of it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tformer.data.batching import BatchPlan
from tformer.data.collate import Batch, Collate
from tformer.errors import ConfigError

_SEED_STRIDE = 1_000_003  # a prime: (seed, position) pairs map to distinct generator seeds


class BatchStream:
    """Collated batches addressed by position: `stream.get(k)` is the k-th batch of the run.

    The global batch is collated whole (so random masking does not depend on the number of
    processes) and rank r keeps its contiguous slice of the rows: with equal-sized slices,
    DDP's gradient average equals the single-process gradient of the global batch.
    """

    def __init__(
        self,
        dataset: Sequence,
        plan: BatchPlan,
        collate: Collate,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset, self.plan, self.collate = dataset, plan, collate
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def __len__(self) -> int:
        """Batches in one epoch."""
        return self.plan.batches_per_epoch  # type: ignore[attr-defined]

    def get(self, position: int) -> Batch:
        generator = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + position)
        batch = self.collate([self.dataset[i] for i in self.plan.batch(position)], generator)
        if self.world_size == 1:
            return batch
        rows = next(iter(batch.values())).shape[0]
        if rows % self.world_size:
            raise ConfigError(
                f"a batch of {rows} examples does not split evenly over {self.world_size} "
                "processes; make batch_size a multiple of the number of processes"
            )
        share = rows // self.world_size
        return {k: v[self.rank * share : (self.rank + 1) * share] for k, v in batch.items()}

    def epoch(self) -> list[Batch]:
        """All batches of epoch 0, in order (for evaluation)."""
        return [self.get(i) for i in range(len(self))]
