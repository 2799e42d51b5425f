"""Trainer: one loop for causal LM, masked LM, seq2seq and classification.

The objectives differ only in their data: every batch is a dict of tensors the model takes as
keyword arguments, `labels` included, and every model returns its own loss. So the loop is
the same for all: forward under autocast, backward (accumulated over micro-batches), clip,
step, schedule; evaluate, log and checkpoint on their cadences.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tformer import kernels
from tformer.checkpoint import (
    BEST,
    CheckpointError,
    load_weights,
    prune_checkpoints,
    read_weights,
    step_dir,
)
from tformer.data.loader import BatchStream
from tformer.models.base import TformerModel
from tformer.tokenizer import Tokenizer
from tformer.training import checkpointing as ckpt
from tformer.training.config import TrainConfig
from tformer.training.distributed import (
    Distributed,
    barrier,
    gradient_sync,
    is_sharded,
    mean_over_processes,
    wrap_model,
)
from tformer.training.evaluation import evaluate_batches
from tformer.training.metrics import MetricsLog, progress_bar
from tformer.training.optim import build_optimizer, build_scheduler
from tformer.training.recompute import checkpoint_activations


@dataclass
class TrainResult:
    step: int
    val_loss: float | None
    best_val_loss: float | None
    elapsed_s: float
    stopped_early: bool
    checkpoint: Path | None


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked for, or for "auto" where bf16 is native; else a no-op."""
    if kernels.resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Trainer:
    """Trains `model` on `train` batches, evaluating on `val`, writing into `run_dir`."""

    def __init__(
        self,
        model: TformerModel,
        config: TrainConfig,
        train: BatchStream,
        val: BatchStream | None,
        run_dir: str | Path,
        *,
        tokenizer: Tokenizer | None = None,
        dist: Distributed | None = None,
    ) -> None:
        self.dist = dist or Distributed()
        if config.activation_checkpointing:
            checkpoint_activations(model)
        self.model = model.to(self.dist.device)
        self.config, self.train_data, self.val_data = config, train, val
        self.run_dir, self.tokenizer = Path(run_dir), tokenizer
        # FSDP2 shards the parameters in place, so the optimizer is built after it, on the
        # shards; DDP leaves them as they are.
        self.wrapped = wrap_model(self.model, self.dist, config.distributed)
        self.sharded = is_sharded(self.model)  # then checkpoints are sharded too
        self.optimizer = build_optimizer(model, config)
        self.scheduler = build_scheduler(self.optimizer, config, model.config.d_model)
        self.forward_model = torch.compile(self.wrapped) if config.compile else self.wrapped
        self.autocast = autocast_context(config.precision, self.dist.device)
        default_smoothing = 0.1 if model.config.arch == "encoder-decoder" else 0.0
        self.label_smoothing = (
            default_smoothing if config.label_smoothing is None else config.label_smoothing
        )
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsLog(self.run_dir, enabled=self.dist.is_main)
        # Everything below is trainer state, saved with each checkpoint.
        self.step = 0
        self.position = 0  # micro-batches consumed: the data position
        self.best_val_loss: float | None = None
        self.bad_evals = 0
        self.elapsed_s = 0.0
        self.window_loss, self.window_steps = 0.0, 0  # training loss since the last log line

    # ---- one optimizer step ----------------------------------------------------------
    def _micro_batches(self) -> list[dict[str, torch.Tensor]]:
        batches = []
        for _ in range(self.config.grad_accum_steps):
            batch = self.train_data.get(self.position)
            batches.append({k: v.to(self.dist.device) for k, v in batch.items()})
            self.position += 1
        return batches

    def train_step(self) -> tuple[float, float, int]:
        """One optimizer step over grad_accum_steps micro-batches: (loss, grad norm, tokens)."""
        self.forward_model.train()
        batches = self._micro_batches()
        loss_sum, tokens = 0.0, 0
        for i, batch in enumerate(batches):
            with gradient_sync(self.wrapped, enabled=i == len(batches) - 1):
                with self.autocast:
                    loss = self.forward_model(**batch, label_smoothing=self.label_smoothing).loss
                (loss / len(batches)).backward()
            loss_sum += loss.item() / len(batches)
            tokens += sum(v.numel() for k, v in batch.items() if k.endswith("input_ids"))
        clip = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        # For a sharded model the norm is over every process's shards (a replicated DTensor).
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip).item()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss_sum, grad_norm, tokens * self.dist.world_size

    # ---- evaluation, checkpoints ----------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Metrics on (up to eval_batches of) the validation split; every rank computes the
        same numbers on the unwrapped model, so no communication is needed (beyond the
        all-gathers of a sharded model's parameters: every rank evaluates, in step)."""
        assert self.val_data is not None
        n = len(self.val_data)
        if self.config.eval_batches is not None:
            n = min(n, self.config.eval_batches)
        batches = (self.val_data.get(i) for i in range(n))
        return evaluate_batches(self.model, batches, self.dist.device, self.autocast)

    def state_dict(self) -> dict[str, Any]:
        """The trainer state beside model and optimizer (whose format depends on sharding)."""
        return {
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "position": self.position,
            "best_val_loss": self.best_val_loss,
            "bad_evals": self.bad_evals,
            "elapsed_s": self.elapsed_s,
            "window_loss": self.window_loss,
            "window_steps": self.window_steps,
            "rng": ckpt.rng_state(),
        }

    def save(self, directory: Path, *, consolidated: bool = True) -> Path:
        """Write a checkpoint (every process calls this). A sharded run writes its shards,
        plus the gathered model.safetensors if `consolidated`; other runs always write it."""
        if self.sharded:
            ckpt.save_sharded_checkpoint(
                directory,
                self.model,
                self.optimizer,
                self.model.config,
                self.state_dict(),
                self.dist,
                self.tokenizer,
                consolidated=consolidated,
            )
        elif self.dist.is_main:
            state = {"optimizer": self.optimizer.state_dict(), **self.state_dict()}
            ckpt.save_checkpoint(directory, self.model, self.model.config, state, self.tokenizer)
        barrier(self.dist)
        return directory

    def resume(self, checkpoint: Path) -> None:
        """Restore weights and trainer state from a checkpoint written by `save`: a sharded
        one into any run (torch.distributed.checkpoint reshards), an unsharded one into an
        unsharded run."""
        state = ckpt.load_trainer_state(checkpoint)
        if ckpt.has_shards(checkpoint):
            ckpt.load_shards(checkpoint, self.model, self.optimizer)
        elif self.sharded:
            raise CheckpointError(
                f"{checkpoint} is the checkpoint of an unsharded run; resume it as it was "
                'trained, with [training] distributed = "ddp" (or in one process)'
            )
        else:
            load_weights(self.model, read_weights(checkpoint), str(checkpoint))
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for key in (
            "step",
            "position",
            "best_val_loss",
            "bad_evals",
            "elapsed_s",
            "window_loss",
            "window_steps",
        ):
            setattr(self, key, state[key])
        ckpt.set_rng_state(state["rng"])
        self.metrics.truncate_after(self.step)

    def _after_eval(self, metrics: dict[str, float]) -> bool:
        """Log, keep the best checkpoint; True if the run should stop: early stopping, or
        the validation loss has reached `target_val_loss` (time-to-target runs)."""
        self.metrics.write(
            "eval",
            self.step,
            val_loss=metrics["loss"],
            val_perplexity=metrics["perplexity"],
            val_accuracy=metrics["accuracy"],
        )
        target = self.config.target_val_loss
        reached = target is not None and metrics["loss"] <= target
        if self.best_val_loss is None or metrics["loss"] < self.best_val_loss:
            self.best_val_loss, self.bad_evals = metrics["loss"], 0
            self.save(self.run_dir / BEST)
            return reached
        self.bad_evals += 1
        patience = self.config.early_stopping_patience
        return reached or (patience > 0 and self.bad_evals >= patience)

    # ---- the loop -------------------------------------------------------------------
    def _log_train(self, grad_norm: float, force: bool) -> dict[str, float] | None:
        """Every log_every steps (or when `force`d): the mean loss since the last line."""
        if not (self.step % self.config.log_every == 0 or force) or not self.window_steps:
            return None
        mean_loss = mean_over_processes(self.window_loss / self.window_steps, self.dist)
        rate = self._window_tokens / max(time.perf_counter() - self._window_start, 1e-9)
        self.metrics.write(
            "train",
            self.step,
            loss=mean_loss,
            lr=self.scheduler.get_last_lr()[0],
            grad_norm=grad_norm,
            tokens_per_s=rate,
            elapsed_s=self.elapsed_s,
        )
        self.window_loss, self.window_steps = 0.0, 0
        self._window_tokens, self._window_start = 0, time.perf_counter()
        return {"loss": mean_loss, "tokens_per_s": rate}

    def fit(self, resume_from: Path | None = None) -> TrainResult:
        """Train to max_steps (or max_time_s, or early stopping), evaluating, logging and
        checkpointing on the way; a final evaluation and checkpoint close the run."""
        if resume_from is not None:
            self.resume(resume_from)
        c = self.config
        bar = progress_bar(c.max_steps, self.step, c.progress and self.dist.is_main)
        self._window_tokens, self._window_start = 0, time.perf_counter()
        val_loss, stopped_early, last_saved = None, False, None
        while self.step < c.max_steps and not stopped_early:
            started = time.perf_counter()
            loss, grad_norm, tokens = self.train_step()
            self.elapsed_s += time.perf_counter() - started
            self.window_loss += loss
            self.window_steps += 1
            self._window_tokens += tokens
            out_of_time = c.max_time_s is not None and self.elapsed_s >= c.max_time_s
            done = self.step == c.max_steps or out_of_time
            logged = self._log_train(grad_norm, force=done)
            if logged:
                postfix = {
                    "loss": f"{logged['loss']:.4f}",
                    "tok_s": f"{logged['tokens_per_s']:,.0f}",
                }
                if c.max_time_s is not None:  # the bar's ETA counts steps, this the time cap
                    postfix["time_left"] = f"{max(c.max_time_s - self.elapsed_s, 0) / 60:.1f} min"
                bar.set_postfix(postfix)
            bar.update(1)
            if self.val_data is not None and (self.step % c.eval_every == 0 or done):
                metrics = self.evaluate()
                val_loss = metrics["loss"]
                stopped_early = self._after_eval(metrics)
            final = done or stopped_early
            if (c.save_every and self.step % c.save_every == 0) or final:
                last_saved = self.save(step_dir(self.run_dir, self.step), consolidated=final)
                if self.dist.is_main:
                    prune_checkpoints(self.run_dir, c.keep_last)
            if out_of_time:
                break
        bar.close()
        return TrainResult(
            self.step, val_loss, self.best_val_loss, self.elapsed_s, stopped_early, last_saved
        )
