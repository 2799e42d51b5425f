"""A contender's step run in a worker process of its own, driven over a pipe.

Generation contenders load a whole pretrained model (and may compile it), so each lives in a
fresh process: its peak memory is its own (peak RSS cannot be reset within a process) and one
contender's allocations or compiled code cannot slow another. The workers of a case stay up
for all of its rounds, so the harness still times them interleaved, in rotating order.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # where `python -m benchmarks.worker` runs


class WorkerError(RuntimeError):
    """A worker process failed; the message ends with its stderr."""


class WorkerStep:
    """Calling it runs one step in `python -m benchmarks.worker` and waits until it is done.

    The worker builds the step with `factory(**kwargs)` (factory: "module:function", kwargs:
    JSON values), after importing `imports` and then taking its memory baseline, as
    `harness.peak_memory_of` does. Every reply is the worker's peak memory so far in MiB.
    """

    def __init__(self, factory: str, kwargs: dict[str, Any], imports: tuple[str, ...] = ()):
        # The worker's stderr: a file, not a pipe, so a chatty worker never blocks on it.
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by close()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=ROOT,
        )
        self.describe = f"{factory}(**{kwargs})"
        spec = {"factory": factory, "kwargs": kwargs, "imports": list(imports)}
        self.peak_mib = self._ask(json.dumps(spec))  # returns once the step is set up

    def __call__(self) -> None:
        self.peak_mib = self._ask("step")

    def _ask(self, line: str) -> float:
        assert self._process.stdin is not None and self._process.stdout is not None
        try:
            self._process.stdin.write(line + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            pass  # the worker has died; the empty reply below says so
        reply = self._process.stdout.readline()
        if not reply:
            self._process.wait()
            self._log.seek(0)
            raise WorkerError(
                f"worker {self.describe} exited with code {self._process.returncode}:\n"
                f"{self._log.read()[-4000:]}"
            )
        return float(reply)

    def close(self) -> float:
        """End the worker (its input closes) and return its peak memory in MiB."""
        assert self._process.stdin is not None and self._process.stdout is not None
        with contextlib.suppress(BrokenPipeError):  # a worker that failed has gone already
            self._process.stdin.close()
        self._process.wait()
        self._process.stdout.close()
        self._log.close()
        return self.peak_mib
