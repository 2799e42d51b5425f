"""Speculative decoding with a draft model: a cheaper model guesses, the model verifies.

A smaller model of the same vocabulary -- or the same model quantised to int4 -- decodes a
few tokens greedily after each of the model's picks; `DecodingState.verify` checks them in one
forward pass of the model and keeps those greedy decoding picks anyway (Leviathan et al.
2023, Chen et al. 2023, for the greedy case). The output is plain greedy decoding's, token for
token; what changes is how many passes of the large model it costs.

The draft keeps a `DecodingState` of its own over the same prompt. Between proposals it is
brought level with the model: its guesses that were rejected are rewound, the tokens the
model settled that the draft has not run yet are fed in one pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tformer.errors import InputError
from tformer.generation.config import GenerationConfig
from tformer.generation.state import DecodingState
from tformer.models import DecoderOnlyLM, EncoderDecoder, TformerModel


def check_draft(model: TformerModel, draft: TformerModel) -> None:
    """A draft must read and write the model's tokens: same kind of model, same vocabulary."""
    if draft.config.arch != model.config.arch:
        raise InputError(
            f"the draft model is arch={draft.config.arch!r} but the model is "
            f"arch={model.config.arch!r}; speculation needs two models of the same kind"
        )
    if draft.config.vocab_size != model.config.vocab_size:
        raise InputError(
            f"the draft model has a vocabulary of {draft.config.vocab_size} tokens but the model "
            f"{model.config.vocab_size}; a draft must share the model's tokenizer"
        )


class DraftProposer:
    """Proposes the draft model's greedy continuation of each row's next token."""

    def __init__(self, draft: TformerModel, state: DecodingState, config: GenerationConfig) -> None:
        """Start the draft on the prompt (or source) of the model's `state`."""
        assert isinstance(draft, (DecoderOnlyLM, EncoderDecoder))  # check_draft's arch test
        self.max_tokens = config.draft_tokens
        self.state = DecodingState(draft, *state.inputs, config)
        self.state.prefill()  # the model, not the draft, picks the first token

    def _catch_up(self, state: DecodingState, next_tokens: Tensor) -> Tensor:
        """Rewind the draft's rejected guesses, run the tokens the model settled since and
        next_tokens (N,) in one pass; the draft's (N, V) logits after next_tokens."""
        # Columns before the shorter of the two lengths hold the same tokens: past the
        # prompt, the model's tokens there are draft guesses it accepted.
        self.state.rewind(max(0, self.state.length - state.length))
        missing = state.tokens[:, self.state.length : state.length]  # (N, m), m >= 0
        return self.state.extend(torch.cat((missing, next_tokens[:, None]), dim=1))

    def __call__(
        self, state: DecodingState, next_tokens: Tensor, active: Tensor, budget: int
    ) -> Tensor | None:
        """(N, k) proposals, k <= min(draft_tokens, budget), to follow next_tokens (N,) in
        the `active` rows; None when there is no room for any, in the model's budget or in
        the draft's own context (which never slides: the draft just stops guessing)."""
        # after catching up and k - 1 more steps the draft holds state.length + k tokens
        room = self.state.room() + self.state.length - state.length
        limit = min(self.max_tokens, budget, room)
        if limit < 1 or not bool(active.any()):
            return None
        guesses = [self._catch_up(state, next_tokens).argmax(dim=-1)]  # (N,) each
        for _ in range(limit - 1):
            guesses.append(self.state.advance(guesses[-1]).argmax(dim=-1))
        return torch.stack(guesses, dim=1)
