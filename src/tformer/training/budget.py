"""`[training] time_budget_s`: train for a number of seconds rather than a number of steps.

A cosine or Noam schedule must know its length (max_steps) in advance, but a budget is given
in seconds. So a few steps of a throwaway copy of the model are timed first (after one warm-up
step, which pays for allocation and kernel selection), and max_steps = budget / seconds per
step. max_time_s, a little above the budget, still stops a run that turns out slower than its
probe, e.g. on a machine that gets busier.

On the CPU the probe also picks the intra-op thread count, 1 or torch's default, whichever is
faster here, and training keeps it: on shared cores a second thread that keeps being
descheduled can make every step several times slower.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tformer.training.config import TrainConfig
from tformer.training.distributed import Distributed, mean_over_processes
from tformer.training.trainer import Trainer

PROBE_STEPS = 4
OVERRUN = 1.15  # max_time_s = budget * OVERRUN: the probe's estimate is allowed 15% error


def seconds_per_step(trainer: Trainer) -> float:
    """Mean seconds of `PROBE_STEPS` optimizer steps, after one warm-up step."""
    trainer.train_step()
    started = time.perf_counter()
    for _ in range(PROBE_STEPS):
        trainer.train_step()
    return (time.perf_counter() - started) / PROBE_STEPS


def fit_to_budget(
    config: TrainConfig, make_trainer: Callable[[TrainConfig, Path], Trainer], dist: Distributed
) -> TrainConfig:
    """`config` with max_steps and max_time_s sized to `config.time_budget_s` (which is then
    cleared): `make_trainer(config, directory)` builds the throwaway probe. Every process
    must call this (the step time is averaged over them, so all agree on max_steps)."""
    assert config.time_budget_s is not None
    candidates = {torch.get_num_threads()} | ({1} if dist.device.type == "cpu" else set())
    with tempfile.TemporaryDirectory() as tmp:
        probe = make_trainer(config.replace(progress=False), Path(tmp))
        timings = {}
        for threads in sorted(candidates):
            torch.set_num_threads(threads)
            timings[threads] = seconds_per_step(probe)
    threads = min(timings, key=timings.__getitem__)
    torch.set_num_threads(threads)
    step_s = mean_over_processes(timings[threads], dist)
    steps = max(config.warmup_steps + 1, int(config.time_budget_s / step_s))
    if config.progress and dist.is_main:
        print(
            f"time budget {config.time_budget_s:.0f} s: {threads} thread(s), "
            f"{step_s * 1000:.0f} ms/step -> {steps} steps",
            file=sys.stderr,
        )
    return config.replace(
        max_steps=steps, max_time_s=config.time_budget_s * OVERRUN, time_budget_s=None
    )
