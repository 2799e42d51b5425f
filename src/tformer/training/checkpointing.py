"""Training checkpoints: the library's model directory plus `trainer_state.pt`.

A checkpoint directory is loadable by `tformer.load` (config.json, model.safetensors,
tokenizer) and also holds what an exact resume needs: optimizer and scheduler state, step,
data position and every RNG state (torch, numpy, Python). The whole directory is written
atomically, so a process killed mid-save leaves the previous checkpoints intact. Where a run
keeps its checkpoints (step directories, best/latest) is `tformer.checkpoint`'s business.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tformer.checkpoint import BEST, CHECKPOINTS, CheckpointError, atomic_directory, write_weights
from tformer.config import ModelConfig
from tformer.tokenizer import Tokenizer
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
        if tokenizer is not None:
            tokenizer.save(tmp)
        torch.save(trainer_state, tmp / TRAINER_STATE)
    return directory


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
