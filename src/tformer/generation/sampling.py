"""Greedy and sampled decoding: one token per row per step, yielded as it is chosen."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from tformer.generation.config import GenerationConfig
from tformer.generation.lookup import PromptLookup
from tformer.generation.processors import apply_processors, repetition_penalty, sampling_processors
from tformer.generation.state import DecodingState
from tformer.generation.stopping import StopStrings


def seen_tokens(tokens: Tensor, mask: Tensor, vocab_size: int) -> Tensor:
    """(N, T) ids and padding mask -> (N, V) bool: which ids occur among the real tokens."""
    counts = torch.zeros(tokens.shape[0], vocab_size, device=tokens.device)
    return counts.scatter_add_(1, tokens, mask.to(counts.dtype)) > 0


def penalise_repeats(logits: Tensor, state: DecodingState, penalty: float) -> Tensor:
    """Apply the repetition penalty to (N, V) scores over the state's tokens so far."""
    if penalty == 1.0:
        return logits
    tokens, mask = state.tokens[:, : state.length], state.mask[:, : state.length]
    return repetition_penalty(logits, seen_tokens(tokens, mask, logits.shape[-1]), penalty)


def make_generator(
    config: GenerationConfig, device: torch.device, *, offset: int = 0
) -> torch.Generator | None:
    """The random stream a sampled decoding draws from: seeded with `config.seed` (+ `offset`,
    one stream per choice when one request asks for several), else fresh entropy; never the
    global RNG, so the same seed gives the same tokens whatever else the program samples.
    None for greedy decoding."""
    if not config.do_sample:
        return None
    generator = torch.Generator(device=device)
    if config.seed is None:
        generator.seed()
    else:
        generator.manual_seed(config.seed + offset)
    return generator


def pick_tokens(scores: Tensor, generator: torch.Generator | None) -> Tensor:
    """(N, V) processed scores -> (N,) next tokens: the argmax, or one draw per row from
    softmax(scores) when sampling (`generator` given)."""
    if generator is None:
        return scores.argmax(dim=-1)
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)[:, 0]


# (state, next tokens (N,), active rows (N,), budget) -> proposals (N, k) or None
Proposer = Callable[[DecodingState, Tensor, Tensor, int], Tensor | None]


def sample_stream(
    state: DecodingState,
    config: GenerationConfig,
    *,
    pad_id: int,
    stop_strings: StopStrings | None = None,
    propose: Proposer | None = None,
) -> Iterator[Tensor]:
    """Yield the next token of every row, (N,), until all rows finished or max_new_tokens.

    A row finishes at an end-of-sequence token or a stop string; after that it yields pad_id.
    Sampling draws from `make_generator`'s stream. With speculation (`propose`: a draft
    model's guesses; prompt lookup's when the config asks for it) a forward pass may settle
    several tokens at once (`DecodingState.verify`); they are yielded one at a time, with the
    same stopping rules as any other token.
    """
    processors = sampling_processors(config)
    generator = make_generator(config, state.tokens.device)
    if config.prompt_lookup_tokens:
        propose = PromptLookup(config, pad_id)
    eos = torch.tensor(config.eos_token_ids or (), dtype=torch.long, device=state.tokens.device)
    finished = torch.zeros(state.tokens.shape[0], dtype=torch.bool, device=eos.device)
    settled = state.tokens.new_zeros((state.tokens.shape[0], 0))  # (N, a): verified, in state
    logits = state.prefill()
    for step in range(config.max_new_tokens):
        in_state = settled.shape[1] > 0
        if in_state:
            next_tokens, settled = settled[:, 0], settled[:, 1:]
        else:
            scores = penalise_repeats(logits.float(), state, config.repetition_penalty)
            next_tokens = pick_tokens(apply_processors(scores, processors), generator)
        next_tokens = next_tokens.masked_fill(finished, pad_id)
        yield next_tokens
        finished |= torch.isin(next_tokens, eos)
        if stop_strings is not None:
            before = state.tokens[:, state.prompt_len : state.prompt_len + step]
            finished |= stop_strings(torch.cat((before, next_tokens[:, None]), dim=1))
        if finished.all() or step == config.max_new_tokens - 1:
            return
        if in_state:  # the logits after the last settled token are there already
            continue
        # Proposals may neither outrun max_new_tokens nor make the window slide mid-pass.
        budget = min(config.max_new_tokens - step - 1, state.room() - 1)
        proposals = propose(state, next_tokens, ~finished, budget) if propose else None
        if proposals is None:
            logits = state.advance(next_tokens)
        else:
            settled, logits = state.verify(next_tokens, proposals, ~finished)
