"""What the pipeline commands share: loading a model that must have a tokenizer, and
collecting texts from the command line and a file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tformer.data.records import read_utf8
from tformer.models import TformerModel
from tformer.tokenizer import Tokenizer


def load_with_tokenizer(path: str | Path) -> tuple[TformerModel, Tokenizer]:
    """`tformer.load(path)`, insisting on a tokenizer (text pipelines cannot run without)."""
    import tformer

    model, tokenizer = tformer.load(path)
    if tokenizer is None:
        raise ValueError(f"{path} has no tokenizer (tokenizer.json or vocab.txt) to encode text")
    return model.eval(), tokenizer


def read_texts(texts: Sequence[str], file: str | None) -> list[str]:
    """The texts given as arguments, then the lines of `file`; at least one is required."""
    collected = list(texts)
    if file is not None:
        collected += read_utf8(file).splitlines()
    if not collected:
        raise ValueError("give at least one text (as arguments or with --file)")
    return collected
