"""Metrics as JSON lines (one per log step and per evaluation) and the tqdm progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tformer.errors import InputError, MissingFileError

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends one JSON object per line to run_dir/metrics.jsonl (main process only)."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.path = run_dir / METRICS_FILE
        self.enabled = enabled

    def write(self, kind: str, step: int, **values: Any) -> None:
        if self.enabled:
            with self.path.open("a") as file:
                file.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after `step`: a resumed run rewrites them."""
        if self.enabled and self.path.is_file():
            kept = [line for line in read_metrics(self.path) if line["step"] <= step]
            self.path.write_text("".join(json.dumps(line) + "\n" for line in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All lines of a metrics.jsonl (a run directory or the file itself)."""
    path = path / METRICS_FILE if path.is_dir() else path
    if not path.is_file():
        raise MissingFileError(f"no {METRICS_FILE} at {path}")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for number, line in enumerate(lines, start=1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise InputError(f"{path}:{number}: not a JSON line") from None
            # The last line may be cut short by a process killed while writing it.
    return parsed


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm:
    """Steps done / total with ETA (tqdm's); loss and tokens/s go in the postfix."""
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
