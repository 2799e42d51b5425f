"""Training checkpoints: the library's model directory plus `trainer_state.pt`.

A checkpoint directory is loadable by `tformer.load` (config.json, model.safetensors,
tokenizer) and also holds what an exact resume needs: optimizer and scheduler state, step,
data position and every RNG state (torch, numpy, Python). The whole directory is written
atomically, so a process killed mid-save leaves the previous checkpoints intact.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tformer.checkpoint import CheckpointError, atomic_directory, write_weights
from tformer.config import ModelConfig
from tformer.tokenizer import Tokenizer

TRAINER_STATE = "trainer_state.pt"
CHECKPOINTS = "checkpoints"
BEST = "best"
_STEP_DIR = re.compile(r"step-(\d+)$")


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


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Completed step checkpoints of a run, oldest first (temporary directories excluded)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(run_dir: Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir} has no checkpoint to resume from ({CHECKPOINTS}/ empty)")
    return found[-1]


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a finished run stands for: its best (lowest validation loss), else its
    latest."""
    best = run_dir / BEST
    return best if best.is_dir() else latest_checkpoint(run_dir)


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints (`best/` is separate)."""
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old)


def holds_run(run_dir: Path) -> bool:
    """True if `run_dir` already has checkpoints of a training run."""
    return bool(list_checkpoints(run_dir)) or (run_dir / BEST).is_dir()


def clear_run(run_dir: Path) -> None:
    """Remove a run's checkpoints and metrics (prepared data is kept for reuse)."""
    for name in (CHECKPOINTS, BEST):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
