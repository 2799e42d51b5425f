"""Reading text, CSV, TSV and JSONL files with errors that point at the offending line."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tformer.data.errors import DataError
from tformer.errors import MissingFileError

TABLE_FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None}


def decode_utf8(raw: bytes, source: str | Path) -> str:
    """`raw` as UTF-8 text; otherwise a DataError naming `source` and the line of the bad byte.

    A NUL byte is valid UTF-8 but never part of a text corpus: it means a binary file (a
    checkpoint, an archive, a UTF-16 file) was given by mistake, which would otherwise be
    trained on or embedded as garbage.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            source,
            f"not valid UTF-8 (byte {raw[error.start]:#04x}); re-encode the file",
            _line_of(raw, error.start),
        ) from error
    nul = raw.find(b"\0")
    if nul >= 0:
        raise DataError(
            source,
            "contains a NUL byte: a binary or UTF-16 file, not UTF-8 text; give a text file",
            _line_of(raw, nul),
        )
    return text


def _line_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def read_utf8(path: str | Path) -> str:
    """The whole file as UTF-8 text: a missing file is a MissingFileError, a non-text one a
    DataError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file")
    return decode_utf8(path.read_bytes(), path)


def read_text(path: str | Path) -> str:
    """`read_utf8`, and an empty (or whitespace-only) file is a DataError too."""
    text = read_utf8(path)
    if not text.strip():
        raise DataError(path, "file is empty")
    return text


def read_records(path: str | Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, {column: value}) for each row of a CSV, TSV or JSONL file.

    CSV/TSV files need a header row naming the columns; JSONL holds one object per line.
    Every column in `columns` must be present (and non-empty for JSONL objects).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise DataError(
            path, f"unknown table format {suffix!r}; use one of {', '.join(TABLE_FORMATS)}"
        )
    lines = read_text(path).splitlines()
    if TABLE_FORMATS[suffix] is None:
        yield from _jsonl_rows(path, lines, columns)
    else:
        yield from _delimited_rows(path, lines, columns, TABLE_FORMATS[suffix])


def read_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file, as parsed: a line
    that is not JSON, or not an object, is a DataError naming it."""
    path = Path(path)
    yield from _json_objects(path, read_text(path).splitlines())


def _json_objects(path: Path, lines: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(path, f"invalid JSON ({error.msg})", number) from error
        if not isinstance(row, dict):
            raise DataError(path, "each line must be a JSON object", number)
        yield number, row


def _jsonl_rows(
    path: Path, lines: list[str], columns: Sequence[str]
) -> Iterator[tuple[int, dict[str, str]]]:
    for number, row in _json_objects(path, lines):
        missing = [c for c in columns if c not in row]
        if missing:
            raise DataError(
                path, f"missing column(s) {', '.join(missing)}; found {', '.join(row)}", number
            )
        yield number, {c: str(row[c]) for c in columns}


def _delimited_rows(
    path: Path, lines: list[str], columns: Sequence[str], delimiter: str
) -> Iterator[tuple[int, dict[str, str]]]:
    # csv.QUOTE_NONE for TSV: tab-separated corpora (e.g. bible-en-es.tsv) contain bare quotes.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
    header = next(reader)
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(
            path, f"missing column(s) {', '.join(missing)}; header has {', '.join(header)}", 1
        )
    index = {c: header.index(c) for c in columns}
    for row in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(
                path, f"{len(row)} fields, the header has {len(header)} ({delimiter!r})", number
            )
        yield number, {c: row[i] for c, i in index.items()}
