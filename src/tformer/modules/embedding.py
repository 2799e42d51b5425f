"""Token embedding: ids -> vectors (paper section 3.4)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class TokenEmbedding(nn.Module):
    """Looks up one learned vector per token id.

    The 2017 paper multiplies embeddings by sqrt(d_model) (section 3.4) so that they are not
    drowned by the sinusoidal encodings added next; Gemma scales too, GPT, BERT and Llama do
    not. The factor is rounded to the weights' dtype first, as Gemma's reference does (in bf16
    sqrt(1152) is 34.0, not 33.94).
    """

    def __init__(self, vocab_size: int, d_model: int, *, scale: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, d_model))
        self.scale = math.sqrt(d_model) if scale else 1.0

    def forward(self, input_ids: Tensor) -> Tensor:
        """(B, T) int -> (B, T, d_model)."""
        x = nn.functional.embedding(input_ids, self.weight)
        if self.scale == 1.0:
            return x
        return x * torch.tensor(self.scale, dtype=x.dtype, device=x.device)
