"""Training checkpoints: the library's model directory plus `trainer_state.pt`.

A checkpoint directory is loadable by `tformer.load` (config.json, model.safetensors,
tokenizer) and also holds what an exact resume needs: optimizer and scheduler state, step,
data position and every RNG state (torch, numpy, Python). The whole directory is written
atomically, so a process killed mid-save leaves the previous checkpoints intact. Where a run
keeps its checkpoints (step directories, best/latest) is `tformer.checkpoint`'s business.

A sharded (FSDP) run's checkpoint keeps model and optimizer state in `sharded/`, each process
writing its own shards (sharded.py); the rest of the trainer state is the same file. Its
`model.safetensors`, gathered from the shards, is written only when asked for (`best/` and
the final checkpoint), since the gather puts the whole model in process 0's memory.
"""

from __future__ import annotations

import contextlib
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tformer.checkpoint import (
    BEST,
    CHECKPOINTS,
    SHARDED,
    CheckpointError,
    atomic_directory,
    write_config,
    write_weights,
)
from tformer.config import ModelConfig
from tformer.tokenizer import Tokenizer
from tformer.training.distributed import Distributed, broadcast_object
from tformer.training.metrics import METRICS_FILE

TRAINER_STATE = "trainer_state.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from (dropout, user code, CUDA kernels)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    config: ModelConfig,
    trainer_state: dict[str, Any],
    tokenizer: Tokenizer | None = None,
) -> Path:
    """Write model, tokenizer and trainer state into `directory`, atomically."""
    with atomic_directory(directory) as tmp:
        write_weights(model, config, tmp)
        _write_tokenizer_and_state(tmp, tokenizer, trainer_state)
    return directory


def _write_tokenizer_and_state(
    directory: Path, tokenizer: Tokenizer | None, trainer_state: dict[str, Any]
) -> None:
    if tokenizer is not None:
        tokenizer.save(directory)
    torch.save(trainer_state, directory / TRAINER_STATE)


def save_sharded_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: ModelConfig,
    trainer_state: dict[str, Any],
    ctx: Distributed,
    tokenizer: Tokenizer | None = None,
    *,
    consolidated: bool,
) -> Path:
    """Every process writes its shards of model and optimizer state into `directory`/sharded,
    process 0 the rest (and, if `consolidated`, the gathered model.safetensors); atomically,
    as `save_checkpoint`. A collective: every process calls it."""
    from tformer.training.sharded import full_model_state, save_shards

    with atomic_directory(directory) if ctx.is_main else contextlib.nullcontext() as tmp:
        tmp = broadcast_object(tmp, ctx)  # process 0's temporary directory, for every process
        save_shards(tmp / SHARDED, model, optimizer)
        weights = full_model_state(model) if consolidated else None
        if ctx.is_main:
            if weights is None:
                write_config(config, tmp)
            else:
                write_weights(model, config, tmp, weights)
            _write_tokenizer_and_state(tmp, tokenizer, trainer_state)
    return directory


def has_shards(directory: Path) -> bool:
    """True for a checkpoint of a sharded run (its model and optimizer state in sharded/)."""
    return (directory / SHARDED).is_dir()


def load_shards(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Model and optimizer state from a sharded checkpoint, into any model (sharded or not) and
    its optimizer; a collective."""
    from tformer.training import sharded

    sharded.load_shards(directory / SHARDED, model, optimizer)


def load_trainer_state(directory: Path) -> dict[str, Any]:
    path = directory / TRAINER_STATE
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {TRAINER_STATE}; it cannot resume training")
    # weights_only=False: the state holds Python RNG tuples; it is a file this library wrote.
    return torch.load(path, map_location="cpu", weights_only=False)


def clear_run(run_dir: Path) -> None:
    """Remove a run's checkpoints and metrics (prepared data is kept for reuse)."""
    for name in (CHECKPOINTS, BEST):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    (run_dir / METRICS_FILE).unlink(missing_ok=True)
