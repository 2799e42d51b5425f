"""Next-token predictions and the logit lens (nostalgebraist, 2020).

The logit lens reads the residual stream after each block through the model's own final norm
and output head, as if the network stopped there: it shows at which depth the final
prediction forms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tformer.explainer.capture import StackRecord
from tformer.models.heads import LMHead


@dataclass
class TopK:
    """The k most likely tokens at each position: ids and probabilities, both (T, k)."""

    ids: Tensor
    probs: Tensor


def top_k(logits: Tensor, k: int) -> TopK:
    """(T, vocab) logits -> the k most probable tokens per position."""
    probs, ids = logits.float().softmax(dim=-1).topk(min(k, logits.shape[-1]), dim=-1)
    return TopK(ids=ids, probs=probs)


def vocabulary_head(model: nn.Module) -> LMHead | None:
    """The model's projection to vocabulary logits, if it has one (GPT, seq2seq, masked LM)."""
    for name in ("lm_head", "head"):
        head = getattr(model, name, None)
        if isinstance(head, LMHead):
            return head
    return None


@dataclass
class LogitLens:
    """Top-1 token id and its probability after the embeddings (row 0) and each block,
    both (n_layers + 1, T)."""

    ids: Tensor
    probs: Tensor


def logit_lens(record: StackRecord, final_norm: nn.Module | None, head: LMHead) -> LogitLens:
    """Decode the stream at every depth of one stack (batch row 0) with the model's head."""
    finish: Callable[[Tensor], Tensor] = final_norm if final_norm is not None else nn.Identity()
    if record.embedded is None:
        raise ValueError("no forward pass of this stack was captured")
    streams = [record.embedded[0]] + [layer.residual["ffn"][0] for layer in record.layers]
    with torch.no_grad():  # one depth at a time: (T, vocab) logits, not (L+1, T, vocab)
        best = [top_k(head(finish(stream)), 1) for stream in streams]
    return LogitLens(
        ids=torch.stack([b.ids[:, 0] for b in best]),
        probs=torch.stack([b.probs[:, 0] for b in best]),
    )
