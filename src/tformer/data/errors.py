"""One error type for bad input data, whose message names the file, the line and the problem."""

from __future__ import annotations

from pathlib import Path

from tformer.errors import InputError


class DataError(InputError):
    """Input data that cannot be used: `path:line: problem` (line omitted when not known).

    A user error (`InputError`), so the `tformer` command reports it as one `tformer: error:`
    line.
    """

    def __init__(self, path: str | Path, problem: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = Path(path)
        self.line = line
        self.problem = problem
