"""Output projection and task heads: what turns the final hidden states into predictions.

Every head maps (B, T, d_model) hidden states (and the padding mask) to its output and knows
its own loss, so models differ only in which head the config names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tformer.config import GATED_ACTIVATIONS, ModelConfig
from tformer.errors import InputError
from tformer.models.output import ModelOutput
from tformer.modules.embedding import TokenEmbedding
from tformer.modules.feedforward import _ACTIVATIONS
from tformer.modules.linear import Linear
from tformer.modules.norm import norm_for

if TYPE_CHECKING:
    from tformer.models.stack import StackOutput

IGNORE_INDEX = -100  # label value that contributes no loss (padding, unmasked MLM positions)


def token_cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy over positions whose label is not IGNORE_INDEX.

    logits (..., C), labels (...). Computed in float32 so bf16 logits do not lose precision.
    """
    return F.cross_entropy(
        logits.flatten(0, -2).float(),
        labels.flatten(),
        ignore_index=IGNORE_INDEX,
        label_smoothing=label_smoothing,
    )


def mean_pool(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Average of the token vectors, padding excluded: (B, T, D) -> (B, D)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def sentence_embedding(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Sentence-BERT's embedding: mean of the token vectors (padding excluded), L2-normalised,
    so dot products are cosine similarities: (B, T, D) -> (B, D). The one pooler behind the
    embedding head, `tformer.pipelines.embed` and the explainer's neighbour sentences."""
    return F.normalize(mean_pool(hidden, attention_mask), dim=-1)


class LMHead(nn.Module):
    """Output projection to vocabulary logits (paper 3.4: shares the embedding matrix if tied).

    Its input is rescaled by d_model ** -0.5 with the config's `scale_output` (T5 v1.0); with
    its `logit_softcap`, logits are bounded softly to (-cap, cap) by tanh(logits / cap) * cap
    (Gemma 2's final-logit soft-capping).
    """

    def __init__(self, config: ModelConfig, tokens: TokenEmbedding, *, bias: bool = False) -> None:
        super().__init__()
        self.proj = Linear(config.d_model, config.vocab_size, bias=bias)
        if config.tie_embeddings:
            self.proj.weight = tokens.weight
        self.scale = config.d_model**-0.5 if config.scale_output else None
        self.softcap = config.logit_softcap

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T, d_model) -> (B, T, vocab)."""
        logits = self.proj(hidden if self.scale is None else hidden * self.scale)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def loss(self, logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
        return token_cross_entropy(logits, labels, label_smoothing)

    def output(
        self,
        stack: StackOutput,
        labels: Tensor | None,
        label_smoothing: float = 0.0,
        logits_to_keep: int | Tensor | None = None,
        **extra: Any,
    ) -> ModelOutput:
        """Logits, the loss when `labels` are given, and what the stack recorded, as one output
        (the decoder-only and encoder-decoder models both end here).

        `logits_to_keep=n` projects only the last n positions: generation needs one, and a
        1,000-token prompt would otherwise make (1000, vocab) logits to keep one row. A (B,)
        LongTensor keeps one position per row instead, (B, 1, vocab): the last real token of
        each row of a right-padded batch.
        """
        hidden = stack.last_hidden_state  # (B, T, d_model)
        if logits_to_keep is not None:
            if labels is not None:
                raise InputError("a loss needs every position's logits; omit logits_to_keep")
            hidden = _kept_positions(hidden, logits_to_keep)  # (B, n, d_model)
        logits = self(hidden)
        return ModelOutput(
            logits=logits,
            loss=None if labels is None else self.loss(logits, labels, label_smoothing),
            last_hidden_state=stack.last_hidden_state,
            hidden_states=stack.hidden_states,
            attentions=stack.attentions,
            cross_attentions=stack.cross_attentions,
            **extra,
        )


def _kept_positions(hidden: Tensor, keep: int | Tensor) -> Tensor:
    """(B, T, d) -> the last `keep` positions (B, keep, d), or row b's position keep[b]
    (B, 1, d) for a (B,) tensor."""
    if isinstance(keep, Tensor):
        if keep.shape != hidden.shape[:1] or bool(((keep < 0) | (keep >= hidden.shape[1])).any()):
            raise InputError(
                f"logits_to_keep as positions needs one position in [0, {hidden.shape[1]}) "
                f"per row, got {keep.tolist()}"
            )
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), keep][:, None]
    if keep < 1:
        raise InputError(f"logits_to_keep={keep} must be >= 1")
    return hidden[:, -keep:]


class MaskedLMHead(LMHead):
    """BERT's MLM head: dense + activation + norm, then the (tied) projection with a bias."""

    def __init__(self, config: ModelConfig, tokens: TokenEmbedding) -> None:
        super().__init__(config, tokens, bias=True)
        self.transform = Linear(config.d_model, config.d_model, bias=config.use_head_bias)
        self.act = _ACTIVATIONS[
            "gelu" if config.activation in GATED_ACTIVATIONS else config.activation
        ]
        self.norm = norm_for(config)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.proj(self.norm(self.act(self.transform(hidden))))


class TokenClassificationHead(nn.Module):
    """One label per token (tagging): (B, T, d_model) -> (B, T, n_labels).

    With `pooler`, a dense layer and `pooler_activation` transform each vector before the
    classifier, and `pooler_norm` normalises it after (ModernBERT's dense, GELU, norm).
    """

    def __init__(self, config: ModelConfig, outputs: int | None = None) -> None:
        """`outputs`: the classifier's size when it is not the config's labels (SpanHead)."""
        super().__init__()
        self.pooler = (
            Linear(config.d_model, config.d_model, bias=config.use_head_bias)
            if config.pooler
            else None
        )
        self.pooler_act = (
            torch.tanh
            if config.pooler_activation == "tanh"
            else _ACTIVATIONS[config.pooler_activation]
        )
        self.pooler_norm = norm_for(config) if config.pooler and config.pooler_norm else None
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = Linear(config.d_model, outputs or config.n_labels)

    def classify(self, x: Tensor) -> Tensor:
        """(..., d_model) -> (..., n_labels): the pooler's transform (if any), the classifier."""
        if self.pooler is not None:
            x = self.pooler_act(self.pooler(x))
        if self.pooler_norm is not None:
            x = self.pooler_norm(x)
        return self.classifier(self.dropout(x))

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.classify(hidden)

    def loss(self, logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
        return token_cross_entropy(logits, labels, label_smoothing)


class SequenceClassificationHead(TokenClassificationHead):
    """One label per sequence from the [CLS] vector or the mean of the tokens.

    The pooler transforms the pooled vector: BERT's pooler and RoBERTa's classification head
    (dense, tanh, out_proj) alike, DistilBERT's pre_classifier with ReLU, ModernBERT's head.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.pooling = config.pooling

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T, d_model) -> (B, n_labels)."""
        pooled = hidden[:, 0] if self.pooling == "cls" else mean_pool(hidden, attention_mask)
        return self.classify(pooled)


class SpanHead(TokenClassificationHead):
    """Extractive question answering (BERT paper, 4.2): a start and an end logit per token,
    (B, T, d_model) -> (B, 2, T), row 0 the starts and row 1 the ends. A two-way tagger's
    layers: BERT's is the classifier alone, ModernBERT's has its dense + GELU + norm first
    (`pooler`), as for tagging.

    Laid out as two classifications over the T positions, so the loss is the token
    cross-entropy of labels (B, 2) = (start, end) positions: the mean of the start and end
    losses, as in BERT. Padding gets the lowest logit: it cannot be an answer, and what the
    stack leaves at padded positions would otherwise enter the softmax (transformers leaves
    them in, so its loss on a padded batch depends on the padding).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, outputs=2)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        logits = self.classify(hidden).transpose(1, 2)  # (B, T, 2) -> (B, 2, T)
        if attention_mask is None:
            return logits
        padding = (attention_mask == 0).unsqueeze(1)  # (B, 1, T)
        return logits.masked_fill(padding, torch.finfo(logits.dtype).min)


class EmbeddingHead(nn.Module):
    """Sentence embedding: mean of the token vectors (padding excluded), L2-normalised, so
    the dot product of two embeddings is their cosine similarity (Sentence-BERT)."""

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T, d_model) -> (B, d_model)."""
        return sentence_embedding(hidden, attention_mask)


def make_encoder_head(config: ModelConfig, tokens: TokenEmbedding) -> nn.Module:
    """The head named by `config.task_head` for an encoder-only model."""
    heads = {
        "masked-lm": lambda: MaskedLMHead(config, tokens),
        "sequence-classification": lambda: SequenceClassificationHead(config),
        "token-classification": lambda: TokenClassificationHead(config),
        "question-answering": lambda: SpanHead(config),
        "embedding": EmbeddingHead,
    }
    return heads[config.task_head]()
