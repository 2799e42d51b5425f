"""Beam search, vectorised over batch and beams: no Python loop over rows or hypotheses.

Each step scores every (beam, token) continuation of every input, keeps the best
`n_candidates` of them, moves those ending in EOS (among the top `num_beams`) into a fixed
size pool of finished hypotheses scored sum(log p) / length ** length_penalty, and continues
the best `num_beams` unfinished ones. The bookkeeping follows Hugging Face `generate()` (same
candidate count, length normalisation and stopping heuristics) so results match it token for
token; scores use -1e9 rather than -inf as "impossible", as it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tformer.generation.config import GenerationConfig
from tformer.generation.sampling import penalise_repeats
from tformer.generation.state import DecodingState

IMPOSSIBLE = -1.0e9


@dataclass
class BeamSearchOutput:
    sequences: Tensor  # (B, num_return_sequences, N) new tokens, pad_id after the end
    scores: Tensor  # (B, num_return_sequences) length-normalised log-probabilities, best first


def _gather(tensor: Tensor, index: Tensor) -> Tensor:
    """Pick along dim 1: tensor (B, K, ...) and index (B, K') -> (B, K', ...)."""
    index = index.reshape(*index.shape, *([1] * (tensor.dim() - 2)))
    return tensor.take_along_dim(index, dim=1)


@dataclass
class _Finished:
    """The best `num_beams` finished hypotheses per input, (B, K, ...)."""

    tokens: Tensor  # (B, K, max_new_tokens)
    scores: Tensor  # (B, K)
    lengths: Tensor  # (B, K)
    present: Tensor  # (B, K) bool

    def merge(
        self, tokens: Tensor, scores: Tensor, length: int, present: Tensor, keep: int
    ) -> _Finished:
        """Add candidates (B, C, ...) and keep the `keep` best of old and new."""
        lengths = torch.full_like(scores, length, dtype=torch.long)
        scores = torch.cat((self.scores, scores), dim=1)
        best = scores.topk(keep, dim=1).indices
        return _Finished(
            _gather(torch.cat((self.tokens, tokens), dim=1), best),
            _gather(scores, best),
            _gather(torch.cat((self.lengths, lengths), dim=1), best),
            _gather(torch.cat((self.present, present), dim=1), best),
        )


def beam_search(state: DecodingState, config: GenerationConfig, *, pad_id: int) -> BeamSearchOutput:
    """Run beam search from `state` (B rows, not yet prefilled) for `config.max_new_tokens`."""
    k, max_new = config.num_beams, config.max_new_tokens
    batch = state.tokens.shape[0]
    device = state.tokens.device
    eos = torch.tensor(config.eos_token_ids or (), dtype=torch.long, device=device)
    n_candidates = max(2, 1 + len(config.eos_token_ids or ())) * k
    among_top_k = torch.arange(n_candidates, device=device) < k  # (C,)

    logits = state.prefill().repeat_interleave(k, dim=0)  # (B*K, V): prompt run once per input
    state.reorder(torch.arange(batch, device=device).repeat_interleave(k))
    running_scores = torch.zeros(batch, k, device=device)
    running_scores[:, 1:] = IMPOSSIBLE  # all beams start equal: expand only the first
    running_tokens = torch.full((batch, k, max_new), pad_id, dtype=torch.long, device=device)
    finished = _Finished(
        tokens=running_tokens.clone(),
        scores=torch.full((batch, k), IMPOSSIBLE, device=device),
        lengths=torch.zeros(batch, k, dtype=torch.long, device=device),
        present=torch.zeros(batch, k, dtype=torch.bool, device=device),
    )
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)
    offsets = torch.arange(batch, device=device)[:, None] * k  # (B, 1) first row of each input
    for step in range(max_new):
        length = step + 1  # new tokens in each candidate, EOS included
        log_probs = penalise_repeats(
            logits.float().log_softmax(dim=-1), state, config.repetition_penalty
        )
        vocab = log_probs.shape[-1]
        totals = (log_probs.view(batch, k, vocab) + running_scores[..., None]).view(batch, -1)
        top_scores, top_index = totals.topk(n_candidates, dim=1)  # (B, C)
        source_beam, token = top_index // vocab, top_index % vocab
        candidates = _gather(running_tokens, source_beam)  # (B, C, max_new)
        candidates[:, :, step] = token
        ends = torch.isin(token, eos) | (length == max_new)  # (B, C)

        # Finished pool: only candidates among the top K count, and only while they can help.
        full = finished.present.all(dim=1, keepdim=True) & (config.early_stopping is True)
        closed = ~(among_top_k & ends) | full | ~improvable
        normalised = top_scores / length**config.length_penalty
        finished = finished.merge(
            candidates, normalised + closed * IMPOSSIBLE, length, ~closed, keep=k
        )

        # Running beams: the best K candidates that did not end.
        running_scores, keep = (top_scores + ends * IMPOSSIBLE).topk(k, dim=1)  # (B, K)
        running_tokens = _gather(candidates, keep)
        improvable = improvable & _can_improve(running_scores, finished, length, config)
        if _should_stop(improvable, finished.present, ends, config):
            break
        state.reorder((_gather(source_beam, keep) + offsets).flatten())
        logits = state.advance(_gather(token, keep).flatten())
    return _best(finished, config.num_return_sequences)


def _can_improve(
    running_scores: Tensor, finished: _Finished, length: int, config: GenerationConfig
) -> Tensor:
    """(B, 1): could the best running beam still beat the worst finished hypothesis?

    Exact without a length penalty (log-probabilities only fall); with one, the best running
    beam is scored at its current length, or at max_new_tokens when early_stopping="never"
    and longer sequences are favoured.
    """
    if config.early_stopping == "never" and config.length_penalty > 0:
        length = config.max_new_tokens
    best_running = running_scores[:, :1] / length**config.length_penalty
    worst_finished = torch.where(
        finished.present, finished.scores.min(dim=1, keepdim=True).values, IMPOSSIBLE
    )
    return (best_running > worst_finished).any(dim=1, keepdim=True)


def _should_stop(
    improvable: Tensor, present: Tensor, ends: Tensor, config: GenerationConfig
) -> bool:
    """Stop when no input can improve, when early_stopping=True and every pool is full, or
    when every candidate ended (the last step)."""
    all_full = bool(present.all()) and config.early_stopping is True
    return not bool(improvable.any()) or all_full or bool(ends.all())


def _best(finished: _Finished, n: int) -> BeamSearchOutput:
    """The n best hypotheses per input, cropped to the longest of them."""
    length = int(finished.lengths[:, :n].max())
    return BeamSearchOutput(finished.tokens[:, :n, :length], finished.scores[:, :n])
