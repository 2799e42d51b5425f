"""tformer: readable, fast, inspectable Transformers from one set of blocks.

>>> import tformer
>>> model = tformer.build_model(tformer.ModelConfig.preset("tiny-decoder"))
"""

from __future__ import annotations

from pathlib import Path

import torch

from tformer.checkpoint import CheckpointError
from tformer.config import ModelConfig, preset_names
from tformer.explainer import Explanation, explain
from tformer.models import (
    DecoderOnlyLM,
    EncoderDecoder,
    EncoderModel,
    ModelOutput,
    TformerModel,
    build_model,
)
from tformer.tokenizer import Tokenizer

__version__ = "0.1.0"


def load_model(path: str | Path) -> TformerModel:
    """Load a model saved with `save_pretrained` (a directory with config.json + model.safetensors)."""
    return TformerModel.from_pretrained(path)


def load(
    path: str | Path, *, dtype: torch.dtype | None = None
) -> tuple[TformerModel, Tokenizer | None]:
    """The one way to open a model: a tformer checkpoint directory, a Hugging Face directory
    (config.json + *.safetensors) or a .gguf file -> (model, tokenizer or None).

    Imported (HF, GGUF) weights become float32 unless `dtype` is given; tformer checkpoints
    keep their stored dtype unless `dtype` is given.
    """
    from tformer.pretrained import load as load_any  # imports the converters only when used

    return load_any(path, dtype=dtype)


__all__ = [
    "CheckpointError",
    "DecoderOnlyLM",
    "EncoderDecoder",
    "EncoderModel",
    "Explanation",
    "ModelConfig",
    "ModelOutput",
    "TformerModel",
    "Tokenizer",
    "__version__",
    "build_model",
    "explain",
    "load",
    "load_model",
    "preset_names",
]
