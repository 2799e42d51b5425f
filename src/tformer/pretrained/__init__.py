"""Real checkpoints in and out: Hugging Face directories and GGUF files.

`load` recognises what a path holds -- a tformer checkpoint, a Hugging Face directory, a GGUF
file -- and returns the tformer model built from the shared blocks plus its tokenizer.
`save_hf_directory` writes a model back in the layout `transformers` loads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tformer.checkpoint import CheckpointError
from tformer.config import read_json
from tformer.models import TformerModel
from tformer.pretrained.hf import is_hf_config, load_hf_directory, save_hf_directory
from tformer.tokenizer import TOKENIZER_FILE, Tokenizer

GGUF_MAGIC = b"GGUF"


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == GGUF_MAGIC


def load(
    path: str | Path, *, dtype: torch.dtype | None = None
) -> tuple[TformerModel, Tokenizer | None]:
    """The model and tokenizer (None if the checkpoint has none) stored at `path`.

    `path` may be a tformer checkpoint directory, a training run directory (its best
    checkpoint, else its latest), a Hugging Face directory (config.json + *.safetensors) or
    a .gguf file. Imported weights are float32 unless `dtype` says otherwise;
    tformer checkpoints keep their stored dtype.
    """
    path = Path(path)
    if path.is_file():
        if not _is_gguf(path):
            raise CheckpointError(f"{path} is neither a GGUF file nor a checkpoint directory")
        from tformer.pretrained.gguf_file import load_gguf  # needs the optional gguf package

        return load_gguf(path, dtype=dtype or torch.float32)
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint at {path}")
    config_file = path / "config.json"
    if not config_file.is_file():
        from tformer.training.checkpointing import holds_run, run_checkpoint

        if holds_run(path):  # a `tformer train` run directory
            return load(run_checkpoint(path), dtype=dtype)
        raise CheckpointError(
            f"{path} has no config.json: not a tformer or Hugging Face checkpoint"
        )
    if is_hf_config(read_json(config_file)):
        return load_hf_directory(path, dtype=dtype or torch.float32)
    model = TformerModel.from_pretrained(path, dtype=dtype)
    has_tokenizer = (path / TOKENIZER_FILE).is_file()
    return model, Tokenizer.load(path) if has_tokenizer else None


__all__ = ["load", "save_hf_directory"]
