"""`tformer.load`: the one way to open a model, whatever the path holds.

A path may be a tformer checkpoint directory, a training run directory, a Hugging Face
directory or a GGUF file; `load` recognises which and returns the tformer model built from the
shared blocks plus its tokenizer. (`TformerModel.from_pretrained` opens the library's own
format only, for code that knows that is what it has.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, overload

import torch

from tformer.checkpoint import CONFIG_FILE, CheckpointError, holds_run, run_checkpoint
from tformer.config import read_json
from tformer.errors import InputError, MissingFileError
from tformer.models import TformerModel
from tformer.pretrained.cache import cached_import
from tformer.pretrained.hf import is_hf_config, load_hf_directory
from tformer.quantize import QUANTIZERS
from tformer.tokenizer import TOKENIZER_FILE, Tokenizer

GGUF_MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    """Whether the file at `path` starts with GGUF's magic bytes."""
    with path.open("rb") as handle:
        return handle.read(4) == GGUF_MAGIC


@overload
def load(
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    require_tokenizer: Literal[True],
    quantize: str | None = None,
    many_rows: bool = False,
) -> tuple[TformerModel, Tokenizer]: ...


@overload
def load(
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    require_tokenizer: bool = False,
    quantize: str | None = None,
    many_rows: bool = False,
) -> tuple[TformerModel, Tokenizer | None]: ...


def load(
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    require_tokenizer: bool = False,
    quantize: str | None = None,
    many_rows: bool = False,
) -> tuple[TformerModel, Tokenizer | None]:
    """The model (in eval mode) and tokenizer (None if there is none) stored at `path`.

    `path` may be a tformer checkpoint directory, a training run directory (its best
    checkpoint, else its latest), a Hugging Face directory (config.json + *.safetensors) or
    a .gguf file. Imported weights are float32 unless `dtype` says otherwise; tformer
    checkpoints keep their stored dtype. With `require_tokenizer`, a checkpoint without one
    is an error: everything that reads or writes text needs it. `quantize` ("int8", "int4"):
    weight-only quantised linear layers on the CPU (`tformer.quantize`; `many_rows` as
    there). A GGUF file's 4-bit layers then keep the file's own blocks, and the prepared
    model is cached, so later loads map it instead of converting (`pretrained/prepared.py`).
    """
    if quantize is not None and quantize not in QUANTIZERS:
        raise InputError(f"quantize={quantize!r}: expected one of {', '.join(QUANTIZERS)}")
    path = Path(path)
    if quantize is not None and path.is_file() and is_gguf(path):
        model, tokenizer = _open_quantised_gguf(path, quantize, many_rows)
    else:
        model, tokenizer = _open(path, dtype)
        if quantize is not None:
            model = QUANTIZERS[quantize](model, many_rows=many_rows)
    if require_tokenizer and tokenizer is None:
        raise CheckpointError(
            f"{path} has no tokenizer (tokenizer.json or vocab.txt), so text cannot be "
            "encoded; save one with the model"
        )
    return model.eval(), tokenizer


def _open_quantised_gguf(
    path: Path, quantize: str, many_rows: bool
) -> tuple[TformerModel, Tokenizer | None]:
    from tformer.pretrained.gguf_file import load_gguf  # needs the optional gguf package
    from tformer.pretrained.prepared import open_prepared, prepared_variant, save_prepared

    return cached_import(
        path,
        prepared_variant(quantize, many_rows),
        lambda: load_gguf(path, quantize=quantize, many_rows=many_rows),
        save=save_prepared,
        open_entry=open_prepared,
    )


def _open(path: Path, dtype: torch.dtype | None) -> tuple[TformerModel, Tokenizer | None]:
    if path.is_file():
        if not is_gguf(path):
            raise CheckpointError(f"{path} is neither a GGUF file nor a checkpoint directory")
        from tformer.pretrained.gguf_file import load_gguf  # needs the optional gguf package

        dtype = dtype or torch.float32
        return cached_import(path, str(dtype), lambda: load_gguf(path, dtype=dtype))
    if not path.is_dir():
        raise MissingFileError(f"no checkpoint at {path}")
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        if holds_run(path):  # a `tformer train` run directory
            return _open(run_checkpoint(path), dtype)
        raise CheckpointError(
            f"{path} has no {CONFIG_FILE}: not a tformer or Hugging Face checkpoint"
        )
    if is_hf_config(read_json(config_file)):
        return load_hf_directory(path, dtype=dtype or torch.float32)
    model = TformerModel.from_pretrained(path, dtype=dtype)
    has_tokenizer = (path / TOKENIZER_FILE).is_file()
    return model, Tokenizer.load(path) if has_tokenizer else None
