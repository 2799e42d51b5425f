"""Logit processors: small functions (N, V) scores -> (N, V) scores, composed in order.

Each filter sets the scores of the tokens it removes to -inf, so a later softmax gives them
probability zero and `argmax` never picks them; every filter keeps at least one token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor

from tformer.generation.config import GenerationConfig

Processor = Callable[[Tensor], Tensor]


def repetition_penalty(scores: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """Make tokens already in the sequence less likely (CTRL, Keskar et al. 2019).

    seen: (N, V) bool. A positive score is divided by `penalty`, a negative one multiplied,
    so penalty > 1 always lowers the token's probability.
    """
    penalised = torch.where(scores > 0, scores / penalty, scores * penalty)
    return torch.where(seen, penalised, scores)


def temperature(scores: Tensor, value: float) -> Tensor:
    """softmax(scores / T): T < 1 sharpens the distribution, T > 1 flattens it."""
    return scores / value


def top_k(scores: Tensor, k: int) -> Tensor:
    """Keep the k highest-scoring tokens (ties with the k-th are kept too)."""
    k = min(k, scores.shape[-1])
    kth_best = scores.topk(k, dim=-1).values[..., -1:]  # (N, 1)
    return scores.masked_fill(scores < kth_best, -torch.inf)


def top_p(scores: Tensor, p: float) -> Tensor:
    """Nucleus filter (Holtzman et al. 2020): keep the smallest set of most likely tokens
    whose probabilities sum to at least p."""
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    probs = sorted_scores.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely tokens
    drop_sorted = mass_before >= p  # the set already reached p without this token
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return scores.masked_fill(drop, -torch.inf)


def min_p(scores: Tensor, p: float) -> Tensor:
    """Keep tokens whose probability is at least p times the most likely token's
    (Nguyen et al. 2024): the cut-off adapts to how confident the model is."""
    probs = scores.softmax(dim=-1)
    threshold = p * probs.amax(dim=-1, keepdim=True)
    return scores.masked_fill(probs < threshold, -torch.inf)


def sampling_processors(config: GenerationConfig) -> list[Processor]:
    """The warpers `config` asks for, in the order Hugging Face applies them."""
    if not config.do_sample:
        return []
    processors: list[Processor] = []
    if config.temperature is not None and config.temperature != 1.0:
        processors.append(partial(temperature, value=config.temperature))
    if config.top_k is not None:
        processors.append(partial(top_k, k=config.top_k))
    if config.top_p is not None and config.top_p < 1.0:
        processors.append(partial(top_p, p=config.top_p))
    if config.min_p is not None and config.min_p > 0.0:
        processors.append(partial(min_p, p=config.min_p))
    return processors


def apply_processors(scores: Tensor, processors: Sequence[Processor]) -> Tensor:
    for processor in processors:
        scores = processor(scores)
    return scores
