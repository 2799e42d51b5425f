"""Turning lists of examples into padded batches, one collator per objective.

Every collator is called as `collate(examples, generator)`; the generator is seeded from the
batch position, so random choices (MLM masking) are reproducible and survive a resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from tformer.models.heads import IGNORE_INDEX

Batch = dict[str, Tensor]
SFTExample = tuple[list[int], list[int]]  # (input ids, labels), already shifted by one


class Collate(Protocol):
    def __call__(self, examples: list, generator: torch.Generator) -> Batch: ...


def pad(sequences: Sequence[Sequence[int]], value: int, *, left: bool = False) -> Tensor:
    """List of B id lists -> (B, T_max) long tensor, filled with `value` on the right (or, with
    `left`, on the left: decoder prompts, whose last real tokens must share the last column).

    The one padder of the library: collators, pipelines and `generation.left_pad` use it.
    """
    longest = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), longest), value, dtype=torch.long)
    for row, sequence in zip(out, sequences, strict=True):
        if len(sequence):
            start = longest - len(sequence) if left else 0
            row[start : start + len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return out


def padding_mask(sequences: Sequence[Sequence[int]], *, left: bool = False) -> Tensor:
    """(B, T_max) with 1 at real tokens and 0 at the padding `pad` adds."""
    return pad([[1] * len(s) for s in sequences], 0, left=left)


def causal_lm_collate(windows: list[np.ndarray], generator: torch.Generator) -> Batch:
    """Windows of T+1 tokens -> input_ids (B, T) and labels (B, T) shifted by one."""
    tokens = torch.from_numpy(np.stack(windows).astype(np.int64))  # (B, T + 1)
    return {"input_ids": tokens[:, :-1], "labels": tokens[:, 1:]}


class MaskedLMCollator:
    """BERT's masking (Devlin et al. 2019, 3.1): pick `mask_prob` of the non-special tokens;
    replace 80% of those by [MASK], 10% by a random token, keep 10% unchanged. The loss is
    taken only at picked positions (labels are IGNORE_INDEX elsewhere)."""

    def __init__(
        self,
        mask_id: int,
        vocab_size: int,
        special_ids: Sequence[int],
        pad_id: int = 0,
        mask_prob: float = 0.15,
    ) -> None:
        self.mask_id, self.pad_id, self.mask_prob = mask_id, pad_id, mask_prob
        self.special = torch.tensor(sorted(set(special_ids) | {pad_id, mask_id}))
        is_ordinary = torch.ones(vocab_size, dtype=torch.bool)
        is_ordinary[self.special] = False
        self.ordinary_ids = is_ordinary.nonzero().squeeze(1)  # random replacements come from here

    def __call__(self, examples: list, generator: torch.Generator) -> Batch:
        input_ids = pad([list(e) for e in examples], self.pad_id)  # (B, T)
        maskable = ~torch.isin(input_ids, self.special)
        picked = (torch.rand(input_ids.shape, generator=generator) < self.mask_prob) & maskable
        labels = torch.where(picked, input_ids, IGNORE_INDEX)
        action = torch.rand(input_ids.shape, generator=generator)
        to_mask = picked & (action < 0.8)
        to_random = picked & (action >= 0.8) & (action < 0.9)
        random_ids = self.ordinary_ids[
            torch.randint(len(self.ordinary_ids), input_ids.shape, generator=generator)
        ]
        input_ids = torch.where(to_mask, self.mask_id, input_ids)
        input_ids = torch.where(to_random, random_ids, input_ids)
        return {
            "input_ids": input_ids,
            "attention_mask": padding_mask(examples),
            "labels": labels,
        }


class Seq2SeqCollator:
    """(source ids, target ids) pairs -> encoder input, shifted-right decoder input, labels.

    decoder_input_ids = [start] + target and labels = target + [eos] (teacher forcing, paper
    3.1). Right padding needs no decoder padding mask: the causal mask already keeps real
    positions from seeing later pads, and pad positions carry IGNORE_INDEX labels.
    """

    def __init__(self, pad_id: int, start_id: int, eos_id: int) -> None:
        self.pad_id, self.start_id, self.eos_id = pad_id, start_id, eos_id

    def __call__(self, examples: list, generator: torch.Generator) -> Batch:
        sources = [list(src) for src, _ in examples]
        targets = [list(tgt) for _, tgt in examples]
        return {
            "input_ids": pad(sources, self.pad_id),
            "attention_mask": padding_mask(sources),
            "decoder_input_ids": pad([[self.start_id, *t] for t in targets], self.pad_id),
            "labels": pad([[*t, self.eos_id] for t in targets], IGNORE_INDEX),
        }


class EncoderCollator:
    """The inputs every encoder collator makes: input_ids (B, T) right-padded with `pad_id`
    and attention_mask (B, T); subclasses add the labels (and segments) of their task."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def inputs(self, examples: list) -> Batch:
        ids = [list(e[0]) for e in examples]
        return {"input_ids": pad(ids, self.pad_id), "attention_mask": padding_mask(ids)}


class ClassificationCollator(EncoderCollator):
    """(ids, label) pairs -> the inputs and labels (B,)."""

    def __call__(self, examples: list, generator: torch.Generator) -> Batch:
        labels = torch.tensor([e[1] for e in examples], dtype=torch.long)
        return {**self.inputs(examples), "labels": labels}


class TaggingCollator(EncoderCollator):
    """(ids, per-token labels) pairs -> the inputs and labels (B, T), IGNORE_INDEX at
    padding."""

    def __call__(self, examples: list, generator: torch.Generator) -> Batch:
        return {**self.inputs(examples), "labels": pad([e[1] for e in examples], IGNORE_INDEX)}


class SpanCollator(EncoderCollator):
    """Question-answering windows (ids, segment ids, (start, end)) -> the inputs,
    token_type_ids (B, T) and labels (B, 2)."""

    def __call__(self, examples: list, generator: torch.Generator) -> Batch:
        return {
            **self.inputs(examples),
            "token_type_ids": pad([e[1] for e in examples], 0),
            "labels": torch.tensor([e[2] for e in examples], dtype=torch.long),
        }


class SFTCollator:
    """Rows of SFT examples -> input_ids (B, T) and labels (B, T), right-padded; with
    `packed`, also position_ids restarting at 0 for each example and segment_ids numbering
    the examples of a row, so each attends to itself only (the block-diagonal mask).

    Each item is a list of (inputs, labels) examples, concatenated into one row. No padding
    mask is needed: padding comes after every real token, which the causal mask already
    hides from them, and its labels are IGNORE_INDEX (padding gets a segment of its own).
    """

    def __init__(self, pad_id: int, *, packed: bool) -> None:
        self.pad_id, self.packed = pad_id, packed

    def __call__(self, examples: list, generator: torch.Generator) -> Batch:
        inputs = [[t for ids, _ in pack for t in ids] for pack in examples]
        labels = [[t for _, ids in pack for t in ids] for pack in examples]
        batch = {"input_ids": pad(inputs, self.pad_id), "labels": pad(labels, IGNORE_INDEX)}
        if self.packed:
            positions = [[i for ids, _ in pack for i in range(len(ids))] for pack in examples]
            segments = [[n for n, (ids, _) in enumerate(pack) for _ in ids] for pack in examples]
            batch["position_ids"] = pad(positions, 0)
            batch["segment_ids"] = pad(segments, -1)
        return batch
