"""Timing, memory and reporting shared by every benchmark case.

A case builds one `Contender` per implementation. Contenders are set up once, warmed up, then
timed in interleaved rounds (the order rotates each round) so that drift in the machine's
speed hits all of them alike. Peak memory is measured separately, in a fresh process per
contender, because a process's peak RSS cannot be reset -- except for contenders whose step
already runs in processes of its own (`MeasuresItself`), which report it.
"""

from __future__ import annotations

import gc
import importlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from tqdm import tqdm

Step = Callable[[], None]


@runtime_checkable
class MeasuresItself(Protocol):
    """A step that runs in processes of its own and reports their peak memory (MiB) when it
    is closed: `benchmarks.isolation.WorkerStep`, `benchmarks.startup.CommandStep`."""

    def close(self) -> float: ...


@dataclass
class Contender:
    """One implementation of a case: `setup()` builds it and returns a function doing one step."""

    name: str
    setup: Callable[[], Step]
    flops_per_step: float | None = None  # model FLOPs of one step, for MFU
    imports: tuple[str, ...] = ()  # modules imported before the memory baseline is taken


@dataclass
class Case:
    """A workload run by several contenders; throughput is `work_per_step / seconds`."""

    name: str
    contenders: list[Contender]
    work_per_step: float
    unit: str  # what `work_per_step` counts, e.g. "tokens"
    ours: tuple[str, ...] = ("tformer",)  # each is compared with every other contender (a peer)
    notes: str = ""
    params: dict[str, object] = field(default_factory=dict)
    # Where one step takes seconds (generating a whole sequence), the case sets its own
    # schedule; None keeps the run's defaults. An explicit --rounds still wins.
    rounds: int | None = None
    steps_per_round: int | None = None
    warmup: int | None = None
    # Measured once after the timing, per contender: numbers that qualify its speed (e.g. the
    # perplexity of a reduced precision), written next to it in the report.
    checks: Callable[[], dict[str, dict[str, float]]] | None = None

    @property
    def peers(self) -> list[str]:
        return [c.name for c in self.contenders if c.name not in self.ours]


@dataclass
class Measurement:
    case: str
    contender: str
    unit: str
    throughputs: list[float]  # work per second, one per round
    flops_per_step: float | None
    work_per_step: float
    peak_mib: float | None = None  # set when the contender ran in a worker process

    @property
    def median(self) -> float:
        return statistics.median(self.throughputs)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Step, n_steps: int, device: torch.device) -> float:
    """Seconds per step, averaged over `n_steps` consecutive steps."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(n_steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / n_steps


def run_case(
    case: Case, *, rounds: int, steps_per_round: int, warmup: int, device: torch.device
) -> list[Measurement]:
    """Time every contender of `case` in `rounds` interleaved rounds.

    A contender whose library is not installed (its set-up raises ImportError) is left out
    with a message; the others still run.
    """
    steps: dict[str, Step] = {}
    try:
        for contender in case.contenders:
            try:
                steps[contender.name] = contender.setup()
            except ImportError as error:
                tqdm.write(f"{case.name}: {contender.name} left out: {error}")
                continue
            for _ in range(warmup):
                steps[contender.name]()
        names = list(steps)
        if not names:
            return []
        times: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(time_steps(steps[name], steps_per_round, device))
    finally:  # worker processes end here, also when a contender failed
        peaks = {n: s.close() for n, s in steps.items() if isinstance(s, MeasuresItself)}
        del steps
        gc.collect()
    return [
        Measurement(
            case=case.name,
            contender=c.name,
            unit=case.unit,
            throughputs=[case.work_per_step / t for t in times[c.name]],
            flops_per_step=c.flops_per_step,
            work_per_step=case.work_per_step,
            peak_mib=peaks.get(c.name),
        )
        for c in case.contenders
        if c.name in times
    ]


def peak_memory_of(contender: Contender, *, steps: int, device: torch.device) -> float:
    """Peak memory in MiB that setting up and running `contender` adds to this process.

    On CPU: peak resident set size minus the resident size before setup (call it in a fresh
    process; see `benchmarks.memory`). On CUDA: torch's peak allocated bytes.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        step = contender.setup()
        for _ in range(steps):
            step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    for module in contender.imports:  # a library's import cost is not the model's memory
        importlib.import_module(module)
    before = proc_status_mib("VmRSS")
    step = contender.setup()
    for _ in range(steps):
        step()
    return proc_status_mib("VmHWM") - before


def proc_status_mib(field: str) -> float:
    """A memory field of /proc/self/status in MiB. VmHWM is the peak RSS of this process image;
    unlike getrusage's ru_maxrss it does not inherit the parent's peak across fork + exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (peak RSS needs Linux)")
