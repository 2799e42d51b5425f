"""Converted once, opened fast: a cache of imported GGUF files as tformer checkpoints.

Importing a GGUF file dequantises every tensor and reorders llama.cpp's rotary rows, which
takes most of a `tformer generate model.gguf` start-up. The converted model does not change
while the file does not, so the first load writes it as an ordinary tformer checkpoint
(config.json, model.safetensors, tokenizer) and later loads open that, with safetensors'
memory-mapped reading. An entry is keyed by the file's resolved path, size and modification
time, the dtype asked for and the tformer version: editing or replacing the file, or
upgrading tformer, makes a new entry, and the entries of older versions of that file are
removed when it is written.

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

import torch

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


def _key(source: Path, dtype: torch.dtype) -> str:
    stat = source.stat()
    stamp = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dtype}|{_version()}"
    return hashlib.sha256(stamp.encode()).hexdigest()[:20]


def _version() -> str:
    """The installed tformer's version (read from its metadata: the package itself imports
    this module)."""
    try:
        return importlib.metadata.version("tformer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cached_import(source: Path, dtype: torch.dtype, convert: Callable[[], Loaded]) -> Loaded:
    """The model and tokenizer of `source` in `dtype`: from the cache when it holds them,
    else `convert()`ed and then stored for the next time."""
    root = cache_root()
    if root is None:
        return convert()
    key = _key(source, dtype)
    entry = root / "gguf" / f"{source.stem}-{key}"
    if entry.is_dir():
        try:
            return _open(entry)
        except CheckpointError:  # damaged (a disk error, a hand edit): convert it again
            shutil.rmtree(entry, ignore_errors=True)
    model, tokenizer = convert()
    _store(entry, model, tokenizer, source, key)
    return model, tokenizer


def _open(entry: Path) -> Loaded:
    model = TformerModel.from_pretrained(entry)
    return model, Tokenizer.load(entry) if (entry / TOKENIZER_FILE).is_file() else None


def _store(
    entry: Path, model: TformerModel, tokenizer: Tokenizer | None, source: Path, key: str
) -> None:
    """Write the entry (atomically, by `save_pretrained`) and drop older entries of `source`."""
    try:
        model.save_pretrained(entry, tokenizer)
        record = {"source": str(source.resolve()), "key": key}
        (entry / SOURCE_FILE).write_text(json.dumps(record) + "\n")
    except OSError as error:
        print(f"tformer: not caching the converted {source.name}: {error}", file=sys.stderr)
        shutil.rmtree(entry, ignore_errors=True)
        return
    for other in entry.parent.iterdir():
        if other != entry and _source_of(other) == str(source.resolve()):
            shutil.rmtree(other, ignore_errors=True)


def _source_of(entry: Path) -> str | None:
    try:
        return json.loads((entry / SOURCE_FILE).read_text())["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
