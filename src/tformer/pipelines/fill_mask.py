"""Fill-mask: the most likely tokens at each [MASK] of a text (BERT's pre-training task)."""

from __future__ import annotations

import torch

from tformer.errors import InputError
from tformer.models import TformerModel
from tformer.models.heads import MaskedLMHead
from tformer.pipelines.batch import encode_texts, require_encoder
from tformer.tokenizer import Tokenizer


@torch.inference_mode()
def fill_mask(
    model: TformerModel, tokenizer: Tokenizer, text: str, *, top_k: int = 5
) -> list[list[tuple[str, float]]]:
    """For each mask token in `text`, the `top_k` (token, probability) pairs, best first."""
    encoder = require_encoder(model, "fill-mask")
    if not isinstance(encoder.head, MaskedLMHead):
        raise InputError(
            f"this model has no masked-LM head (its head is {model.config.task_head!r}), so it "
            "cannot fill masks; sentence-embedding models such as all-MiniLM-L6-v2 ship without "
            "one: use `tformer embed` with them, or load a *ForMaskedLM checkpoint"
        )
    mask_id = tokenizer.token_id("mask")
    if mask_id is None:
        raise InputError("the tokenizer has no mask token, so no position can be masked")
    ids, attention = encode_texts(encoder, tokenizer, [text])
    positions = (ids[0] == mask_id).nonzero().flatten()
    if positions.numel() == 0:
        raise InputError(f"no {tokenizer.special_tokens['mask']} in the text; add one to fill")
    logits = encoder(ids, attention_mask=attention).logits  # (1, T, vocab)
    probs, top = logits[0, positions].float().softmax(-1).topk(top_k)  # (n_masks, top_k)
    return [
        [(tokenizer.decode([int(i)]), float(p)) for p, i in zip(row_p, row_i, strict=True)]
        for row_p, row_i in zip(probs, top, strict=True)
    ]
