"""The Hugging Face families tformer reads and writes, as data: one `Family` record each.

Each module holds one family or a group that shares a layout; `record.py` explains the record.
Supporting a new family means adding a record (and listing it in FAMILIES), not writing a loader.
"""

from __future__ import annotations

from tformer.checkpoint import CheckpointError
from tformer.pretrained.families.bart import BART
from tformer.pretrained.families.bert import BERT, DISTILBERT, ROBERTA
from tformer.pretrained.families.gemma import GEMMA, GEMMA2, GEMMA3_TEXT
from tformer.pretrained.families.gpt2 import GPT2
from tformer.pretrained.families.gpt_neox import GPT_NEOX
from tformer.pretrained.families.marian import MARIAN
from tformer.pretrained.families.modernbert import MODERNBERT
from tformer.pretrained.families.phi3 import PHI3
from tformer.pretrained.families.record import Family
from tformer.pretrained.families.rotary import LLAMA, MISTRAL, QWEN2, QWEN3
from tformer.pretrained.families.t5 import T5, T5_ENCODER

__all__ = ["FAMILIES", "Family", "family_for"]

FAMILIES = (
    BERT,
    GPT2,
    LLAMA,
    MISTRAL,
    QWEN2,
    QWEN3,
    GEMMA,
    GEMMA2,
    GEMMA3_TEXT,
    BART,
    MARIAN,
    ROBERTA,
    DISTILBERT,
    PHI3,
    GPT_NEOX,
    MODERNBERT,
    T5,
    T5_ENCODER,
)


def family_for(model_type: str, architecture: str | None = None) -> Family:
    """The family that reads config.json's `model_type`, or a CheckpointError listing them all.

    Where records share a model_type (T5's encoder-decoder and its encoder alone), the one
    whose classes include `architecture`; the first record otherwise.
    """
    matches = [f for f in FAMILIES if model_type in f.model_types]
    for family in matches:
        if architecture in family.architectures:
            return family
    if matches:
        return matches[0]
    supported = ", ".join(dict.fromkeys(t for f in FAMILIES for t in f.model_types))
    raise CheckpointError(f"unknown architecture model_type={model_type!r}; supported: {supported}")
