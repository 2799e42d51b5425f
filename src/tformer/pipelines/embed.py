"""Sentence embeddings: mean-pooled, L2-normalised token vectors (Sentence-BERT, Reimers &
Gurevych 2019), as all-MiniLM-L6-v2 and other sentence-transformers encoders are used."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tformer.models import TformerModel
from tformer.models.heads import sentence_embedding
from tformer.pipelines.batch import encode_texts, require_encoder
from tformer.tokenizer import Tokenizer


@torch.inference_mode()
def embed(
    model: TformerModel,
    tokenizer: Tokenizer,
    sentences: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    truncate: bool = True,
) -> Tensor:
    """(N, d_model) unit-length embeddings, so dot products are cosine similarities.

    Pooling uses the encoder's last hidden states whatever its head, so an MLM or classifier
    checkpoint can embed too. Longer inputs than `max_length` are truncated or refused.
    """
    encoder = require_encoder(model, "embedding")
    chunks = []
    for start in range(0, len(sentences), batch_size):
        ids, mask = encode_texts(
            encoder, tokenizer, sentences[start : start + batch_size],
            max_length=max_length, truncate=truncate,
        )  # fmt: skip
        hidden = encoder(ids, attention_mask=mask).last_hidden_state  # (B, T, d_model)
        chunks.append(sentence_embedding(hidden.float(), mask))  # (B, d_model)
    return torch.cat(chunks)


def cosine_similarity(embeddings: Tensor) -> Tensor:
    """(N, d) unit vectors -> (N, N) cosine similarities."""
    return embeddings @ embeddings.T
