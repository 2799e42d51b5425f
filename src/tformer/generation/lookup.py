"""Prompt lookup: speculative decoding without a draft model.

Outputs that quote, summarise, translate or edit their input repeat n-grams of it. So the
tokens that followed the latest earlier occurrence of the sequence's last n-gram are a cheap
guess of what comes next (Saxena 2023, "prompt lookup decoding"; transformers'
`prompt_lookup_num_tokens`). `DecodingState.verify` checks the guesses in one forward pass
and keeps those greedy decoding picks anyway, so the output is token for token plain greedy
decoding's, only with fewer forward passes when guesses hold.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tformer.generation.config import GenerationConfig
from tformer.generation.state import DecodingState


def lookup(history: Tensor, max_tokens: int, max_ngram: int) -> Tensor:
    """history (t,) -> up to `max_tokens` ids (k,) that followed the most recent earlier
    occurrence of its last n tokens, for the longest n <= max_ngram that occurs earlier;
    empty (0,) when not even the last token does."""
    for n in range(min(max_ngram, history.shape[0] - 1), 0, -1):
        earlier = history.unfold(0, n, 1)[:-1]  # (t - n, n): every n-gram but the last one
        starts = (earlier == history[-n:]).all(dim=1).nonzero()
        if starts.numel():
            start = int(starts[-1]) + n  # where the continuation of the latest one begins
            return history[start : start + max_tokens]
    return history[:0]


class PromptLookup:
    """Proposes the tokens that may follow each row's next token (see the module doc)."""

    def __init__(self, config: GenerationConfig, filler: int) -> None:
        self.max_tokens = config.prompt_lookup_tokens
        self.max_ngram = config.prompt_lookup_max_ngram
        self.filler = filler  # pads a row's shorter proposal; greedy rejects it or picks it

    def __call__(
        self, state: DecodingState, next_tokens: Tensor, active: Tensor, budget: int
    ) -> Tensor | None:
        """(N, k) proposals, k <= min(prompt_lookup_tokens, budget), to follow next_tokens
        (N,) in the `active` (N,) rows; None when no active row has any."""
        if budget < 1:
            return None
        limit = min(self.max_tokens, budget)
        found = [
            lookup(torch.cat((row, token[None])), limit, self.max_ngram) if live else row[:0]
            for row, token, live in zip(state.history(), next_tokens, active.tolist(), strict=True)
        ]
        width = max(len(f) for f in found)
        if width == 0:
            return None
        proposals = next_tokens.new_full((len(found), width), self.filler)
        for b, tokens in enumerate(found):
            proposals[b, : len(tokens)] = tokens
        return proposals
