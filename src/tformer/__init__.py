"""tformer: readable, fast, inspectable Transformers from one set of blocks.

>>> import tformer
>>> model = tformer.build_model(tformer.ModelConfig.preset("tiny-decoder"))
>>> model, tokenizer = tformer.load("runs/shakespeare-char-cpu")  # any checkpoint, HF dir, .gguf
"""

from __future__ import annotations

from tformer.checkpoint import CheckpointError
from tformer.config import ModelConfig, preset_names
from tformer.explainer import Explanation, explain
from tformer.loading import load
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
    "preset_names",
]
