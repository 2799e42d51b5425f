"""torch.distributed set-up: one process per device under `torchrun`, DDP or FSDP2 around it.

Parallelism is applied to a model from outside (as in torchtitan); the model code knows
nothing about it. Without torchrun's environment this is a single process and a no-op.

Two strategies share everything else (data split, loop, logging): "ddp" keeps a whole model,
its gradients and optimizer state in every process and all-reduces gradients; "fsdp" keeps a
1/world_size shard of each (fsdp.py). The few places where they differ are functions here
that take the wrapped model, so the Trainer has one code path for both. FSDP2 is imported only
by FSDP runs (it costs half a second of start-up).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> Distributed:
    """Join the process group torchrun describes (nccl on GPUs, gloo on CPU), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world_size == 1:
        return Distributed(device=device)
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


def wrap_model(model: nn.Module, ctx: Distributed, strategy: str = "ddp") -> nn.Module:
    """`model` made data-parallel over the processes by `strategy` ("ddp" or "fsdp").

    DDP returns a wrapper (the parameters stay those of `model`); FSDP2 shards `model` in
    place (its parameters become DTensor shards) and returns it. One process: `model` as is.
    """
    if not ctx.enabled:
        return model
    if strategy == "fsdp":
        from tformer.training.fsdp import shard_model

        return shard_model(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def is_sharded(model: nn.Module) -> bool:
    """True for a model whose parameters FSDP2 has sharded over the processes (a model can
    only be one once torch.distributed.fsdp has been imported)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def gradient_sync(wrapped: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """With enabled=False, backward passes inside the block only accumulate local gradients,
    without communication: the micro-batches of an optimizer step before its last."""
    if enabled:
        return contextlib.nullcontext()
    if isinstance(wrapped, nn.parallel.DistributedDataParallel):
        return wrapped.no_sync()
    if is_sharded(wrapped):
        from tformer.training.fsdp import without_gradient_sync

        return without_gradient_sync(wrapped)
    return contextlib.nullcontext()


def broadcast_object(value: object, ctx: Distributed) -> object:
    """Process 0's `value` on every process (a collective: call on every rank)."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_processes(value: float, ctx: Distributed) -> float:
    """The average of a per-process scalar (for logging; a collective: call on every rank)."""
    if not ctx.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.item() / ctx.world_size


def barrier(ctx: Distributed) -> None:
    if ctx.enabled:
        dist.barrier()
