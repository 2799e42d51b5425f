"""Validation metrics: loss, perplexity and accuracy, for every objective alike.

Token-level objectives (causal LM, MLM, seq2seq) count every position whose label is not
IGNORE_INDEX; classification counts one label per sequence. Loss is averaged over all those
targets (not over batches), so it does not depend on how the split was batched.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch
from torch import nn

from tformer.data.collate import Batch
from tformer.models.heads import IGNORE_INDEX, token_cross_entropy


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    batches: Iterable[Batch],
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """{"loss", "perplexity", "accuracy", "targets"} over `batches` (no label smoothing)."""
    was_training = model.training
    model.eval()
    total_loss, correct, targets = 0.0, 0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        with autocast or contextlib.nullcontext():
            logits = model(**batch).logits
        counted = labels != IGNORE_INDEX
        n = int(counted.sum())
        total_loss += token_cross_entropy(logits, labels).item() * n
        correct += int((logits.argmax(-1) == labels)[counted].sum())
        targets += n
    model.train(was_training)
    loss = total_loss / max(targets, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "accuracy": correct / max(targets, 1),
        "targets": targets,
    }
