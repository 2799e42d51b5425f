"""One module per `tformer` subcommand, and the little they share (below).

Each module defines `register(subparsers)`, which adds its parser and sets `handler` to a
function taking the parsed arguments. Handlers stay thin: they parse, call one library function
and print. `tformer.cli` finds the modules here, so adding a command never edits a shared list.
"""

from __future__ import annotations

from collections.abc import Sequence

from tformer.data.records import read_utf8
from tformer.errors import InputError

MODEL_HELP = (
    "what tformer.load opens: a checkpoint directory, a `tformer train` run directory (its best "
    "checkpoint), a Hugging Face directory or a .gguf file"
)


def read_texts(texts: Sequence[str], file: str | None) -> list[str]:
    """The texts given as arguments, then the lines of `file` (--file); at least one is
    required."""
    collected = list(texts)
    if file is not None:
        collected += read_utf8(file).splitlines()
    if not collected:
        raise InputError("give at least one text (as arguments or with --file)")
    return collected
