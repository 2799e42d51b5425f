"""The library's own checkpoint directory, and where a training run keeps its checkpoints.

A checkpoint is `config.json` + `model.safetensors` (+ tokenizer). Writes are atomic:
everything goes into a temporary sibling directory that replaces the target only once
complete, so an interrupted save never leaves a half-written checkpoint. Loading checks every
tensor's name, shape and dtype against the model and says what does not fit.

A run directory (what `tformer train` writes) holds `checkpoints/step-NNNNNNNN/` and `best/`;
the helpers at the end find them. They live here, next to the format, because loading a run
directory needs them as much as training does.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from tformer.config import ModelConfig
from tformer.errors import CheckpointError, ConfigError
from tformer.lazy_tensors import LazyTensors, safetensors_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINTS = "checkpoints"  # a run's step checkpoints, under the run directory
BEST = "best"  # a run's checkpoint with the lowest validation loss
SHARDED = "sharded"  # an FSDP checkpoint's model + optimizer shards (torch.distributed.checkpoint)
ADAPTERS = "adapters"  # a LoRA run's final adapters, in PEFT's format
_STEP_DIR = re.compile(r"step-(\d+)$")


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes `target` only if the block completes.

    The temporary directory is a sibling of `target` (same filesystem, so the final rename is
    atomic); an existing `target` is replaced; on error nothing at `target` changes.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with tied (storage-sharing) tensors stored once, under their first name."""
    seen: set[tuple[int, int]] = set()
    unique = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key not in seen:
            seen.add(key)
            unique[name] = tensor.detach().contiguous()
    return unique


def write_config(config: ModelConfig, directory: Path) -> None:
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def tied_names(model: nn.Module) -> set[str]:
    """The parameter names that are second names of a parameter already named before (a tied
    output projection): what `unique_state_dict` leaves out, found by identity, so it also
    holds for a state dict whose tied tensors were gathered into separate copies."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return every - {name for name, _ in model.named_parameters()}


def write_weights(
    model: nn.Module,
    config: ModelConfig,
    directory: Path,
    tensors: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Write config.json and model.safetensors into an existing directory: `model`'s own
    tensors, or `tensors` (a state dict gathered from elsewhere, tied names already removed)."""
    write_config(config, directory)
    tensors = unique_state_dict(model) if tensors is None else tensors
    save_file(dict(tensors), str(directory / WEIGHTS_FILE), metadata={"format": "pt"})


def read_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a tformer checkpoint: no {CONFIG_FILE} in it")
    try:
        return ModelConfig.load(path)
    except ConfigError as error:  # malformed JSON, unknown fields, wrong types, bad values
        raise CheckpointError(f"invalid model config: {error}") from error  # names the file


def read_weights(directory: str | Path) -> LazyTensors:
    """The tensors of `directory`'s model.safetensors by name, each read when looked up."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        if (Path(directory) / SHARDED).is_dir():
            raise CheckpointError(
                f"{directory} holds only the sharded state of an FSDP run ({SHARDED}/), no "
                f"{WEIGHTS_FILE}; load the run's best/ or final checkpoint, which have one, or "
                "resume the run to its end"
            )
        raise CheckpointError(f"{directory} has no {WEIGHTS_FILE}")
    return safetensors_file(path)


def load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy `weights` into `model`, one tensor at a time (so a lazy mapping never holds more
    than one), after checking each one's name, shape and dtype. Every problem is collected
    and raised together; the model may then be partly filled."""
    expected = unique_state_dict(model)  # detached views of the model's own tensors
    problems = []
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    for name in sorted(set(expected) & set(weights)):
        want, got = expected[name], weights[name]
        if want.shape != got.shape:
            problems.append(
                f"{name}: shape {tuple(got.shape)} in file, model expects {tuple(want.shape)}"
            )
        elif want.dtype != got.dtype:
            problems.append(f"{name}: dtype {got.dtype} in file, model has {want.dtype}")
        else:
            with torch.no_grad():
                want.copy_(got)
    if problems:
        raise CheckpointError(
            f"{source} does not fit this model ({len(problems)} problem(s)); was it saved from a "
            "model with a different config?\n  " + "\n  ".join(problems)
        )


# ---- run directories -------------------------------------------------------------------------
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
