"""Model and optimizer state of a sharded (FSDP) run, through torch.distributed.checkpoint.

Each process writes and reads only its own shards (`dcp.save` / `dcp.load`), so no process
ever holds the whole model or optimizer state; the files record every tensor's global shape
and which slice each file holds, so they can be read back by another number of processes or
by an unsharded model, which DCP reshards to. `get_state_dict` / `set_state_dict` name the
tensors by their plain parameter names (the optimizer state too, instead of positions), so
the same names serve a sharded and an unsharded model.

`full_model_state` is the other direction: the whole model gathered to process 0's CPU, for
the library's ordinary `model.safetensors`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from tformer.checkpoint import tied_names


def save_shards(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write this process's shards of model and optimizer state under `path` (a collective:
    every process calls it with the same path, on a filesystem they share)."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=path)


def load_shards(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Read model (and optimizer) state written by `save_shards` into this process's shards,
    in place (a collective). The state dicts of the live model and optimizer say which
    tensors and slices to read; a fresh optimizer's state is first created by a zero-lr step
    inside `get_state_dict`, so that there is something to read into."""
    if optimizer is None:
        state = {"model": get_model_state_dict(model)}
        _read(state, path)
        set_model_state_dict(model, state["model"])
        return
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    _read(state, path)
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )


def _read(state: dict[str, Any], path: Path) -> None:
    """`dcp.load` into `state`; in a single process (resuming a sharded run there) without
    the warning DCP gives every time it reads without a process group."""
    with warnings.catch_warnings():
        if not dist.is_initialized():
            warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        dcp.load(state, checkpoint_id=path)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, unsharded, on process 0's CPU ({} on the others; a
    collective). Tied names are dropped, as `unique_state_dict` does for a local model: the
    gather returns a separate copy for each name."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    tied = tied_names(model)
    return {name: tensor for name, tensor in state.items() if name not in tied}
