"""Sequence classification: a label and its probability for each text."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tformer.models import TformerModel
from tformer.pipelines.batch import encode_texts, label_names, require_head
from tformer.tokenizer import Tokenizer


@torch.inference_mode()
def classify(
    model: TformerModel, tokenizer: Tokenizer, texts: Sequence[str], *, batch_size: int = 32
) -> list[list[tuple[str, float]]]:
    """Per text, every (label, probability) pair, most likely first. Labels are the config's
    class names (`labels`, e.g. a Hugging Face id2label) or the class ids as strings."""
    encoder = require_head(
        model,
        "sequence-classification",
        "classification",
        "train one, or load a *ForSequenceClassification",
    )
    names = label_names(encoder)
    results = []
    for start in range(0, len(texts), batch_size):
        ids, mask = encode_texts(encoder, tokenizer, texts[start : start + batch_size])
        probs = encoder(ids, attention_mask=mask).logits.float().softmax(-1)  # (B, n_labels)
        for row in probs:
            order = row.argsort(descending=True).tolist()
            results.append([(names[i], float(row[i])) for i in order])
    return results
