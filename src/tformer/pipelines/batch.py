"""Texts -> a right-padded batch for an encoder, truncated or refused when too long."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from tformer.data.collate import pad, padding_mask
from tformer.errors import InputError
from tformer.models import EncoderModel, TformerModel
from tformer.tokenizer import Tokenizer


def require_encoder(model: TformerModel, task: str) -> EncoderModel:
    if not isinstance(model, EncoderModel):
        raise InputError(
            f"{task} needs an encoder (BERT-style) model, not a {type(model).__name__}"
        )
    return model


def require_head(model: TformerModel, head: str, task: str, how: str) -> EncoderModel:
    """`model` as an encoder with task head `head`, or an InputError saying `how` to get one."""
    encoder = require_encoder(model, task)
    if encoder.config.task_head != head:
        raise InputError(
            f"this model's head is {encoder.config.task_head!r}; {task} needs a {head} head ({how})"
        )
    return encoder


def label_names(model: EncoderModel) -> tuple[str, ...]:
    """The class names of a classifier's outputs: its config's `labels`, else the ids."""
    config = model.config
    return config.labels or tuple(str(i) for i in range(config.n_labels))


def encode_texts(
    model: TformerModel,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    max_length: int | None = None,
    truncate: bool = True,
) -> tuple[Tensor, Tensor]:
    """ids (B, T) and attention_mask (B, T) on the model's device, right-padded with its pad id.

    Texts longer than `max_length` tokens (default: the model's max_seq_len) are cut to it
    (special tokens kept) or, with truncate=False, rejected with the offending text's index.
    """
    limit = max_length or model.config.max_seq_len
    rows = tokenizer.encode_batch(texts, max_length=limit if truncate else None)
    for i, row in enumerate(rows):
        if len(row) > limit:
            raise InputError(
                f"text {i} is {len(row)} tokens long, more than max_length={limit}; shorten "
                "it or allow truncation"
            )
    device = next(model.parameters()).device
    return pad(rows, model.config.pad_id or 0).to(device), padding_mask(rows).to(device)
