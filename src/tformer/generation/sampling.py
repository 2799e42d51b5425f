"""Greedy and sampled decoding: one token per row per step, yielded as it is chosen."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from tformer.generation.config import GenerationConfig
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


def sample_stream(
    state: DecodingState,
    config: GenerationConfig,
    *,
    pad_id: int,
    stop_strings: StopStrings | None = None,
) -> Iterator[Tensor]:
    """Yield the next token of every row, (N,), until all rows finished or max_new_tokens.

    A row finishes at an end-of-sequence token or a stop string; after that it yields pad_id.
    Sampling draws from a `torch.Generator` seeded with `config.seed`, never the global RNG,
    so the same seed gives the same tokens whatever else the program samples.
    """
    processors = sampling_processors(config)
    generator = None
    if config.do_sample:
        generator = torch.Generator(device=state.tokens.device)
        if config.seed is None:
            generator.seed()  # fresh entropy, leaving the global RNG alone
        else:
            generator.manual_seed(config.seed)
    eos = torch.tensor(config.eos_token_ids or (), dtype=torch.long, device=state.tokens.device)
    finished = torch.zeros(state.tokens.shape[0], dtype=torch.bool, device=eos.device)
    logits = state.prefill()
    for step in range(config.max_new_tokens):
        scores = penalise_repeats(logits.float(), state, config.repetition_penalty)
        scores = apply_processors(scores, processors)
        if generator is None:
            next_tokens = scores.argmax(dim=-1)
        else:
            next_tokens = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)[:, 0]
        next_tokens = next_tokens.masked_fill(finished, pad_id)
        yield next_tokens
        finished |= torch.isin(next_tokens, eos)
        if stop_strings is not None:
            finished |= stop_strings(torch.cat((state.generated, next_tokens[:, None]), dim=1))
        if finished.all() or step == config.max_new_tokens - 1:
            return
        logits = state.advance(next_tokens)
