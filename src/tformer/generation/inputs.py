"""Checking and batching what `generate` is given, so mistakes fail before any compute."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tformer.data.collate import pad, padding_mask
from tformer.errors import ConfigError, InputError
from tformer.generation.config import GenerationConfig
from tformer.models import DecoderOnlyLM, EncoderDecoder, TformerModel


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token lists of different lengths -> ids (B, T_max) and mask (B, T_max), padded on the
    left so every row's last real token sits in the last column, where decoding continues."""
    return pad(sequences, pad_id, left=True), padding_mask(sequences, left=True)


def prepare_inputs(
    model: TformerModel, input_ids: Tensor, attention_mask: Tensor | None, options: GenerationConfig
) -> tuple[Tensor, Tensor]:
    """Validate ids (B, T) and mask; an empty prompt becomes [BOS] if the model has one.

    A prompt (or source) must fit the model's context. A decoder-only model's new tokens may
    go past it (the window slides, see `DecodingState`), except with beam search and with a
    static cache or compiled step, whose buffers are sized for the whole generation; an
    encoder-decoder's target must fit too.
    """
    if not isinstance(model, (DecoderOnlyLM, EncoderDecoder)):
        raise InputError(
            f"generate needs a DecoderOnlyLM or EncoderDecoder, got {type(model).__name__}"
        )
    config = model.config
    if input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise InputError(
            f"input_ids must be a (batch, length) LongTensor, got shape {tuple(input_ids.shape)} "
            f"and dtype {input_ids.dtype}; use tformer.generation.left_pad for lists of ids"
        )
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    elif attention_mask.shape != input_ids.shape:
        raise InputError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
            f"{tuple(input_ids.shape)}; they must match"
        )
    if isinstance(model, EncoderDecoder):
        if config.start_id is None:
            raise ConfigError(
                "the model config has no decoder_start_id or bos_id to start decoding from"
            )
        _check_not_empty(attention_mask, "source", hint="give every row at least one token")
        _check_fits(input_ids.shape[1], config.max_seq_len, "source")
        _check_room(1, options.max_new_tokens, config.max_seq_len, "target", "")
        return input_ids, attention_mask
    if input_ids.shape[1] == 0 and config.bos_id is not None:
        input_ids = input_ids.new_full((input_ids.shape[0], 1), config.bos_id)
        attention_mask = torch.ones_like(input_ids)
    _check_not_empty(
        attention_mask,
        "prompt",
        hint="the model has no bos_id to start from; give every row at least one token",
    )
    _check_fits(input_ids.shape[1], config.max_seq_len, "prompt")
    if options.num_beams > 1 or options.static_cache or options.compile_step:
        because = " (beam search and static caches do not slide past the context)"
        _check_room(
            input_ids.shape[1], options.max_new_tokens, config.max_seq_len, "prompt", because
        )
    return input_ids, attention_mask


def _check_not_empty(mask: Tensor, what: str, *, hint: str) -> None:
    empty = (mask.sum(dim=-1) == 0).nonzero().flatten().tolist() if mask.numel() else [0]
    if mask.shape[-1] == 0 or empty:
        rows = "every row" if mask.shape[-1] == 0 else f"row(s) {empty}"
        raise InputError(f"the {what} is empty in {rows}; {hint}")


def _check_fits(length: int, max_seq_len: int, what: str) -> None:
    if length > max_seq_len:
        raise InputError(
            f"the {what} has {length} tokens but the model's context is max_seq_len="
            f"{max_seq_len}; shorten it"
        )


def _check_room(length: int, max_new_tokens: int, max_seq_len: int, what: str, why: str) -> None:
    if length + max_new_tokens > max_seq_len:
        raise InputError(
            f"{what} of {length} tokens + max_new_tokens={max_new_tokens} exceeds the model's "
            f"context max_seq_len={max_seq_len}{why}; use max_new_tokens <= {max_seq_len - length}"
        )
