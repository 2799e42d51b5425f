"""Converted once, opened fast: a cache of imported GGUF files as tformer checkpoints.

Importing a GGUF file reads its metadata (the whole vocabulary), dequantises or repacks
every tensor and reorders llama.cpp's rotary rows, which takes most of a `tformer generate
model.gguf` start-up. The converted model does not change
while the file does not, so the first load writes it as an ordinary tformer checkpoint
(config.json, model.safetensors, tokenizer) and later loads open that, with safetensors'
memory-mapped reading. An entry is keyed by the file's resolved path, size and modification
time, what else the result depends on (the dtype asked for, or the quantisation scheme and
the torch build and CPU class its packed layout depends on: `prepared.prepared_variant`) and
the tformer version: editing or replacing the file, or upgrading tformer, makes a new entry,
and the entries of older versions of that file are removed when it is written. Quantised
models are stored as prepared weights (`prepared.py`), memory-mapped when opened.

The cache lives in `$TFORMER_CACHE_DIR`, else `$XDG_CACHE_HOME/tformer`, else
`~/.cache/tformer`; `TFORMER_CACHE_DIR=off` turns it off. A cache that cannot be written (a
read-only home, a full disk) only costs the speed-up; a damaged entry is converted again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from tformer.checkpoint import CheckpointError
from tformer.models import TformerModel
from tformer.tokenizer import TOKENIZER_FILE, Tokenizer

CACHE_VARIABLE = "TFORMER_CACHE_DIR"
SOURCE_FILE = "source.json"  # which file an entry was converted from, and its key

Loaded = tuple[TformerModel, Tokenizer | None]


def cache_root() -> Path | None:
    """Where converted files are kept, or None when the cache is off."""
    configured = os.environ.get(CACHE_VARIABLE)
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tformer"


def _stamp(source: Path) -> str:
    """What changes when the file is edited or replaced: its path, size and modification time."""
    stat = source.stat()
    return f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _key(source: Path, variant: str) -> str:
    stamp = f"{_stamp(source)}|{variant}|{_version()}"
    return hashlib.sha256(stamp.encode()).hexdigest()[:20]


def _version() -> str:
    """The installed tformer's version (read from its metadata: the package itself imports
    this module)."""
    try:
        return importlib.metadata.version("tformer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _open_checkpoint(entry: Path) -> Loaded:
    model = TformerModel.from_pretrained(entry)
    return model, Tokenizer.load(entry) if (entry / TOKENIZER_FILE).is_file() else None


def _save_checkpoint(entry: Path, model: TformerModel, tokenizer: Tokenizer | None) -> None:
    model.save_pretrained(entry, tokenizer)  # atomically


def cached_import(
    source: Path,
    variant: str,
    convert: Callable[[], Loaded],
    *,
    save: Callable[[Path, TformerModel, Tokenizer | None], None] = _save_checkpoint,
    open_entry: Callable[[Path], Loaded] = _open_checkpoint,
) -> Loaded:
    """The model and tokenizer of `source` as `convert()` makes them: from the cache when it
    holds them, else converted and then stored for the next time. `variant` names what else
    the result depends on (the dtype, a quantisation scheme); `save` writes an entry
    atomically and `open_entry` reads one (a tformer checkpoint unless given)."""
    root = cache_root()
    if root is None:
        return convert()
    key = _key(source, variant)
    entry = root / "gguf" / f"{source.stem}-{key}"
    if entry.is_dir():
        try:
            return open_entry(entry)
        except CheckpointError:  # damaged (a disk error, a hand edit): convert it again
            shutil.rmtree(entry, ignore_errors=True)
    model, tokenizer = convert()
    _store(entry, model, tokenizer, source, variant, save)
    return model, tokenizer


def _store(
    entry: Path,
    model: TformerModel,
    tokenizer: Tokenizer | None,
    source: Path,
    variant: str,
    save: Callable[[Path, TformerModel, Tokenizer | None], None],
) -> None:
    """Write the entry and drop the entries it replaces: the same source's entries of an
    older version of the file, and of this variant from older versions of tformer."""
    record = {"source": str(source.resolve()), "stamp": _stamp(source), "variant": variant}
    try:
        save(entry, model, tokenizer)
        (entry / SOURCE_FILE).write_text(json.dumps(record) + "\n")
    except OSError as error:
        print(f"tformer: not caching the converted {source.name}: {error}", file=sys.stderr)
        shutil.rmtree(entry, ignore_errors=True)
        return
    for other in entry.parent.iterdir():
        found = _record_of(other)
        if other == entry or found is None or found.get("source") != record["source"]:
            continue
        if found.get("stamp") != record["stamp"] or found.get("variant") == variant:
            shutil.rmtree(other, ignore_errors=True)


def _record_of(entry: Path) -> dict[str, str] | None:
    try:
        found = json.loads((entry / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None
