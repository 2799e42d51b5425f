"""FSDP2 (`torch.distributed.fsdp.fully_shard`): parameters, gradients and optimizer state
sharded over the processes.

Each process keeps a 1/world_size shard (dim 0) of every parameter, as a DTensor; the
optimizer, built on those parameters, keeps state for the shard only. Before a group of
modules runs, its parameters are all-gathered; after its backward, its gradients are
reduce-scattered, so each process holds the gradient of its own shard. Each Transformer block
is its own group, so only one block's full parameters exist at a time (plus the root's:
embeddings, final norm, heads; a tied output projection stays in the group of its embedding).
The gradient average equals DDP's, so the two strategies train the same steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard

from tformer.modules.block import TransformerBlock


def shard_model(model: nn.Module) -> nn.Module:
    """`model`, sharded in place: each Transformer block, then the root, as `fully_shard`
    requires (bottom-up; the root takes every parameter no block took).

    Each process shards its own copy, so every process first takes process 0's weights, as
    DDP does when it wraps a model: processes that initialised differently would otherwise
    train a model stitched from different initialisations."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, src=0)
    for block in [m for m in model.modules() if isinstance(m, TransformerBlock)]:
        fully_shard(block)
    fully_shard(model)
    return model


@contextlib.contextmanager
def without_gradient_sync(model: FSDPModule) -> Iterator[None]:
    """Backward passes inside the block keep unsharded, unreduced gradients (FSDP2's
    counterpart of DDP's `no_sync`: gradient accumulation without communication)."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
