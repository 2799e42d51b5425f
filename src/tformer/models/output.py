"""The typed result every model's forward returns."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from tformer.modules.kv_cache import KVCache


@dataclass
class ModelOutput:
    """What a forward pass produced; fields a model or call did not compute are None.

    logits: (B, T, vocab) for language-model and token heads, (B, n_labels) for sequence
        classification, (B, 2, T) start and end logits for question answering.
        embeddings: (B, d_model) pooled, L2-normalised (embedding head).
    hidden_states: the residual stream after the embeddings and after each block, each
        (B, T, d_model), when `output_hidden_states=True`. attentions / cross_attentions:
        one (B, H, T, T_key) tensor per layer, when `output_attentions=True`.
    """

    logits: Tensor | None = None
    loss: Tensor | None = None
    embeddings: Tensor | None = None
    last_hidden_state: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None
    encoder_last_hidden_state: Tensor | None = None
    cache: KVCache | None = None
