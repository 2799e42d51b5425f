"""`prepare_corpus`: text / TSV / CSV / JSONL -> tokenizer + train and validation token files.

The split is deterministic: a plain-text file is cut at a character offset (first part train,
last `val_fraction` validation, the standard Tiny Shakespeare split); a table is split by a
seeded permutation of its rows. The tokenizer is trained on the training part only, so no
validation text leaks into the vocabulary.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from tformer.config import read_json
from tformer.data.errors import DataError
from tformer.data.records import read_records, read_text
from tformer.data.tokens import open_token_file, write_token_file
from tformer.errors import InputError
from tformer.tokenizer import Tokenizer

TOKENIZER_KINDS = ("char", "bpe", "wordpiece")
MANIFEST = "prepared.json"
T = TypeVar("T")
MAX_PIECE_CHARS = 1000  # longest piece of text a subword tokenizer is trained on


@dataclass
class PreparedCorpus:
    """A prepared directory: tokenizer.json, train.bin, val.bin (+ sidecars), prepared.json."""

    directory: Path

    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer.load(self.directory)

    def tokens(self, split: str) -> np.memmap:
        return open_token_file(self.directory / f"{split}.bin")


def train_tokenizer(
    texts: list[str], kind: str, vocab_size: int | None, *, progress: bool = False
) -> Tokenizer:
    """A tokenizer of `kind` ("char", "bpe", "wordpiece") trained on `texts`, cut into
    `training_pieces`; `progress` shows the trainer's progress bars (for a terminal: they
    also write blank lines to stdout)."""
    if kind not in TOKENIZER_KINDS:
        raise InputError(f"tokenizer={kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}")
    if kind != "char" and vocab_size is None:
        raise InputError(f"tokenizer={kind!r} needs a vocab_size")
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "train.txt"
        file.write_text("\n".join(training_pieces(texts)), encoding="utf-8")
        if kind == "char":
            return Tokenizer.train_char([file])
        if kind == "bpe":
            return Tokenizer.train_bpe([file], vocab_size, show_progress=progress)  # type: ignore[arg-type]
        return Tokenizer.train_wordpiece([file], vocab_size, show_progress=progress)  # type: ignore[arg-type]


def training_pieces(texts: Iterable[str], max_chars: int = MAX_PIECE_CHARS) -> Iterator[str]:
    """`texts` with every one longer than `max_chars` cut into pieces of at most that size,
    at the last space before the limit (a hard cut only where a piece has no space).

    Why: the subword trainers rescan a whole pre-token at every merge, so their time grows
    with the square of the longest run of text without whitespace. A file that is one long
    line without spaces ('a' * 5_000_000, minified data) made `tformer prepare --tokenizer bpe`
    run for minutes without a word. Cutting such runs bounds the work to linear in the file's
    size, and refusing the file would only make its owner re-wrap it by hand: nothing is lost,
    since the cut falls at a space, where the pre-tokenizers split anyway, and a run of over
    `max_chars` letters is no word of any language. Only training sees the pieces; the token
    files encode the text as it is.
    """
    for text in texts:
        start = 0
        while len(text) - start > max_chars:
            end = start + max_chars
            space = text.rfind(" ", start + 1, end)
            cut = space if space > start else end
            yield text[start:cut]
            start = cut
        yield text[start:]


def encode_stream(tokenizer: Tokenizer, texts: list[str], *, documents: bool) -> np.ndarray:
    """Concatenated ids of `texts`. If they are separate `documents` (table rows), each is
    followed by EOS when the tokenizer has one; pieces of one text are simply joined."""
    eos = tokenizer.token_id("eos") if documents else None
    pieces: list[int] = []
    for ids in tokenizer.encode_batch(texts, add_special_tokens=False):
        pieces.extend(ids)
        if eos is not None:
            pieces.append(eos)
    return np.asarray(pieces, dtype=np.int64)


def split_text(path: Path, val_fraction: float) -> tuple[list[str], list[str]]:
    """First (1 - val_fraction) of the characters train, the rest validation; each side is
    cut into lines (kept with their newlines) so that encoding runs in parallel."""
    text = read_text(path)
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut].splitlines(keepends=True), text[cut:].splitlines(keepends=True)


def split_rows(
    path: Path, column: str, val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    rows = [row[column] for _, row in read_records(path, [column])]
    return seeded_split(rows, val_fraction, seed, path)


def seeded_split(
    rows: Sequence[T], val_fraction: float, seed: int, path: Path
) -> tuple[list[T], list[T]]:
    """A seeded permutation of `rows` (read from `path`) cut into train and validation; at
    least one row goes to validation."""
    if len(rows) < 2:
        raise DataError(path, f"{len(rows)} row(s); need at least 2 to split train/validation")
    order = np.random.default_rng(seed).permutation(len(rows))
    n_val = max(1, int(len(rows) * val_fraction))
    return [rows[i] for i in order[n_val:]], [rows[i] for i in order[:n_val]]


def prefix_split(key: str, test_prefixes: Sequence[str], validation_prefixes: Sequence[str]) -> str:
    """ "test", "val" or "train": which split a row whose split column holds `key` belongs to
    (the test prefixes are asked first; e.g. "Mark " and "Acts 1:" for a Bible table)."""
    if test_prefixes and key.startswith(tuple(test_prefixes)):
        return "test"
    if validation_prefixes and key.startswith(tuple(validation_prefixes)):
        return "val"
    return "train"


def prepare_corpus(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    tokenizer: str = "char",
    vocab_size: int | None = None,
    val_fraction: float = 0.1,
    text_column: str = "text",
    seed: int = 0,
    progress: bool = False,
) -> PreparedCorpus:
    """Split `input_path`, train a tokenizer on the training part, write both token files
    (`progress`: show the tokenizer trainer's progress on a terminal)."""
    input_path, out_dir = Path(input_path), Path(out_dir)
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction={val_fraction} must be in (0, 1)")
    is_text = input_path.suffix.lower() in (".txt", "")
    if is_text:
        train, val = split_text(input_path, val_fraction)
    else:
        train, val = split_rows(input_path, text_column, val_fraction, seed)
    tok = train_tokenizer(train, tokenizer, vocab_size, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(out_dir)
    for split, texts in (("train", train), ("val", val)):
        ids = encode_stream(tok, texts, documents=not is_text)
        write_token_file(out_dir / f"{split}.bin", ids, tok.vocab_size)
    manifest = {
        "source": str(input_path),
        "tokenizer": tokenizer,
        "vocab_size": tok.vocab_size,
        "val_fraction": val_fraction,
        "seed": seed,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return PreparedCorpus(out_dir)


def prepared_matches(out_dir: Path, **settings: object) -> bool:
    """True if `out_dir` was prepared from the same source with the same settings (reuse it)."""
    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        return False
    recorded = read_json(manifest)
    return all(recorded.get(k) == v for k, v in settings.items())
