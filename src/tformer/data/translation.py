"""Seq2seq pairs from a TSV/CSV/JSONL table (shared BPE vocabulary), and the synthetic copy task."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tformer.data.collate import Seq2SeqCollator
from tformer.data.prepare import prefix_split
from tformer.data.records import read_records
from tformer.data.task import (
    TaskData,
    check_length,
    obtain_tokenizer,
    parse_options,
    resolve_path,
)
from tformer.errors import ConfigError
from tformer.tokenizer import Tokenizer


@dataclass
class PairOptions:
    """`[data]` of task = "seq2seq".

    Rows whose `split_column` starts with one of `test_prefixes` / `validation_prefixes` form
    those splits (e.g. "Mark " and "Acts 1:"); without `split_column`, `val_fraction` of the
    rows (seeded permutation) are validation. One BPE vocabulary is trained on both sides of
    the training rows (the paper's shared source-target vocabulary, section 5.1).
    """

    task: str
    path: str
    source_column: str = "src"
    target_column: str = "tgt"
    tokenizer: str = "bpe"  # or a path to a tokenizer.json / checkpoint directory
    vocab_size: int = 8000
    split_column: str | None = None
    validation_prefixes: list[str] = field(default_factory=list)
    test_prefixes: list[str] = field(default_factory=list)
    val_fraction: float = 0.05
    seed: int = 0
    max_tokens: int | None = None  # padded tokens per batch (length bucketing); None: batch_size
    truncate: bool = False


def split_pairs(options: PairOptions, path: Path) -> dict[str, list[tuple[int, str, str]]]:
    """Rows as (line, source, target), grouped into "train", "val" and "test"."""
    columns = [options.source_column, options.target_column]
    if options.split_column:
        columns.append(options.split_column)
    splits: dict[str, list[tuple[int, str, str]]] = {"train": [], "val": [], "test": []}
    rows = list(read_records(path, columns))
    for line, row in rows:
        split = "train"
        if options.split_column:
            key = row[options.split_column]
            split = prefix_split(key, options.test_prefixes, options.validation_prefixes)
        splits[split].append((line, row[options.source_column], row[options.target_column]))
    if not options.split_column:
        order = np.random.default_rng(options.seed).permutation(len(splits["train"]))
        n_val = max(1, int(len(order) * options.val_fraction))
        everything = splits["train"]
        splits["val"] = [everything[i] for i in order[:n_val]]
        splits["train"] = [everything[i] for i in order[n_val:]]
    return splits


def encode_pairs(
    tokenizer: Tokenizer, rows: list[tuple[int, str, str]], path: Path, limit: int, truncate: bool
) -> list[tuple[list[int], list[int]]]:
    """Encode both sides; a side longer than `limit` (counting the EOS/start token added by the
    collator) is an error naming its line, unless `truncate`."""
    sources = tokenizer.encode_batch([r[1] for r in rows], add_special_tokens=False)
    targets = tokenizer.encode_batch([r[2] for r in rows], add_special_tokens=False)
    return [
        (
            check_length(src, limit, path, line, truncate),
            check_length(tgt, limit - 1, path, line, truncate),
        )
        for (line, _, _), src, tgt in zip(rows, sources, targets, strict=True)
    ]


def build_seq2seq(table: dict, work_dir: Path, base_dirs: list[Path], max_seq_len: int) -> TaskData:
    options = parse_options(PairOptions, table, "[data]")
    path = resolve_path(options.path, base_dirs)
    splits = split_pairs(options, path)
    train_texts = [text for _, src, tgt in splits["train"] for text in (src, tgt)]
    tokenizer = obtain_tokenizer(options.tokenizer, train_texts, options.vocab_size, base_dirs)
    encoded = {
        name: encode_pairs(tokenizer, rows, path, max_seq_len, options.truncate)
        for name, rows in splits.items()
    }
    fields = tokenizer.config_ids()
    collate = Seq2SeqCollator(fields["pad_id"], fields["bos_id"], fields["eos_id"])
    return TaskData(
        "seq2seq",
        encoded["train"],
        encoded["val"],
        collate,
        fields,
        tokenizer,
        train_lengths=[max(len(s), len(t)) + 1 for s, t in encoded["train"]],
        extras={
            "test": encoded["test"],
            "test_references": [tgt for _, _, tgt in splits["test"]],
            "max_tokens": options.max_tokens,
        },
    )


# ---- the copy task ------------------------------------------------------------------------
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
FIRST_SYMBOL = 3


@dataclass
class CopyOptions:
    """`[data]` of task = "copy": random sequences of `seq_len` symbols to copy (or reverse).

    The Annotated Transformer's toy task: a vocabulary of 11 = pad, start, end + 8 symbols.
    """

    task: str
    seq_len: int = 10
    n_symbols: int = 8
    n_train: int = 100_000
    n_val: int = 1000
    reverse: bool = False
    seed: int = 0


class RandomSequences:
    """Example i: a (source, target) pair drawn from a generator seeded by (seed, i)."""

    def __init__(self, options: CopyOptions, n: int, salt: int) -> None:
        self.options, self.n, self.salt = options, n, salt

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[list[int], list[int]]:
        if not 0 <= index < self.n:
            raise IndexError(index)  # also ends iteration: `for pair in dataset`
        o = self.options
        rng = np.random.default_rng([o.seed, self.salt, index])
        source = (rng.integers(0, o.n_symbols, o.seq_len) + FIRST_SYMBOL).tolist()
        return source, source[::-1] if o.reverse else source


def build_copy(table: dict, work_dir: Path, base_dirs: list[Path], max_seq_len: int) -> TaskData:
    options = parse_options(CopyOptions, table, "[data]")
    if options.seq_len + 1 > max_seq_len:
        raise ConfigError(f"seq_len={options.seq_len} needs max_seq_len >= {options.seq_len + 1}")
    fields = {
        "vocab_size": FIRST_SYMBOL + options.n_symbols,
        "pad_id": PAD_ID,
        "bos_id": BOS_ID,
        "eos_id": EOS_ID,
    }
    # Different salts keep the held-out sequences apart from the training stream's generator.
    return TaskData(
        "copy",
        RandomSequences(options, options.n_train, salt=0),
        RandomSequences(options, options.n_val, salt=1),
        Seq2SeqCollator(PAD_ID, BOS_ID, EOS_ID),
        fields,
    )
