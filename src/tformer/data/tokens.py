"""Token files: a flat array of token ids on disk, read back through a memory map.

A memory map lets a corpus larger than RAM be sampled at random: only the pages a batch
touches are read. Ids are stored as uint16 when the vocabulary fits (half the disk and page
cache of uint32); a small JSON sidecar records the dtype and vocabulary size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tformer.config import read_json
from tformer.data.errors import DataError
from tformer.errors import MissingFileError

SIDECAR_SUFFIX = ".json"


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype holding every id below `vocab_size`."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_token_file(path: str | Path, ids: Iterable[int] | np.ndarray, vocab_size: int) -> Path:
    """Write `ids` as a raw array plus `<path>.json` with its dtype and vocabulary size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        raise ValueError(f"token ids must be in [0, {vocab_size}) to write {path}")
    dtype = token_dtype(vocab_size)
    array.astype(dtype).tofile(path)
    meta = {"dtype": dtype.name, "vocab_size": vocab_size, "n_tokens": int(array.size)}
    _sidecar(path).write_text(json.dumps(meta) + "\n")
    return path


def open_token_file(path: str | Path) -> np.memmap:
    """A read-only memory map over a file written by `write_token_file`: shape (n_tokens,)."""
    path = Path(path)
    sidecar = _sidecar(path)
    if not path.is_file() or not sidecar.is_file():
        raise MissingFileError(f"no token file {path} (with {sidecar.name}); run `tformer prepare`")
    meta = read_json(sidecar)
    dtype = np.dtype(meta["dtype"])
    expected = meta["n_tokens"] * dtype.itemsize
    if path.stat().st_size != expected:
        raise DataError(path, f"{path.stat().st_size} bytes, expected {expected}; re-run prepare")
    if meta["n_tokens"] == 0:
        raise DataError(path, "token file is empty")
    return np.memmap(path, dtype=dtype, mode="r")
