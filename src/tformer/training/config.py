"""TrainConfig: the `[training]` table of a recipe, validated in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tformer.errors import ConfigError
from tformer.field_types import check_field_types

SCHEDULES = ("cosine", "noam", "constant")
OPTIMIZERS = ("adamw", "muon")  # muon: Muon for the blocks' matrices, AdamW for the rest
PRECISIONS = ("auto", "bf16", "fp32")
DISTRIBUTED = ("ddp", "fsdp")  # how several processes share the model (distributed.py)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, evaluation and checkpointing settings.

    batch_size is the global micro-batch (split over the processes); one optimizer step sees
    batch_size * grad_accum_steps examples. distributed chooses, when torchrun starts several
    processes, between DDP (a whole model per process) and FSDP2 (parameters, gradients and
    optimizer state sharded over the processes, checkpoints sharded too); one process ignores it. lr is the peak learning rate, except for
    schedule="noam", where the paper's lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    is multiplied by lr (so lr=1 is the paper's formula, section 5.3).
    """

    max_steps: int = 1000
    batch_size: int = 32
    grad_accum_steps: int = 1
    lr: float = 1e-3
    optimizer: str = "adamw"  # or "muon" (muon.py); lr and schedule serve both kinds of step
    min_lr: float | None = None  # cosine floor; None: lr / 10
    schedule: str = "cosine"
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    label_smoothing: float | None = None  # None: 0.1 for seq2seq (paper 5.4), else 0
    precision: str = "auto"  # "auto": bf16 autocast where bf16 is native (kernels), else fp32
    compile: bool = False
    activation_checkpointing: bool = False  # recompute blocks in backward (recompute.py)
    distributed: str = "ddp"  # "ddp" or "fsdp", under torchrun (distributed.py)
    seed: int = 1337
    eval_every: int = 250
    eval_batches: int | None = 20  # None: the whole validation split
    log_every: int = 10
    save_every: int = 0  # 0: only at the end
    keep_last: int = 2
    early_stopping_patience: int = 0  # evaluations without improvement; 0 disables
    target_val_loss: float | None = None  # stop after the first evaluation at or below it
    max_time_s: float | None = None  # stop (and save) after this much training time
    time_budget_s: float | None = None  # size max_steps to this much training (budget.py)
    progress: bool = True

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer={self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.optimizer == "muon" and self.distributed == "fsdp":
            raise ConfigError(
                'optimizer="muon" needs whole matrices; distributed="fsdp" shards them '
                '(use distributed="ddp")'
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision={self.precision!r}; choose one of {', '.join(PRECISIONS)}"
            )
        if self.distributed not in DISTRIBUTED:
            raise ConfigError(
                f"distributed={self.distributed!r}; choose one of {', '.join(DISTRIBUTED)} "
                '("fsdp" shards the model over the processes, "ddp" copies it to each)'
            )
        for name in ("max_steps", "batch_size", "grad_accum_steps", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"lr={self.lr} must be positive")
        if self.schedule == "noam" and self.warmup_steps < 1:
            raise ConfigError("schedule='noam' needs warmup_steps >= 1")
        if self.target_val_loss is not None and self.target_val_loss <= 0:
            raise ConfigError(f"target_val_loss={self.target_val_loss} must be positive")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError(f"time_budget_s={self.time_budget_s} must be positive")
        if self.keep_last < 1:
            raise ConfigError(f"keep_last={self.keep_last} must be >= 1")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """From a recipe's `[training]` table; unknown keys are errors that name them."""
        from tformer.data.task import parse_options

        return parse_options(cls, values, "[training]")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
