"""Entity-level precision, recall and F1 of a token classifier (seqeval: an entity counts
only when its type and its whole span are right, as CoNLL-2003 scores NER)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from tformer.data.collate import Batch
from tformer.errors import InputError
from tformer.models import TformerModel
from tformer.models.heads import IGNORE_INDEX


@torch.no_grad()
def entity_scores(
    model: TformerModel, batches: Iterable[Batch], labels: Sequence[str]
) -> dict[str, float]:
    """{"precision", "recall", "f1"} over the words of `batches` (the positions whose label
    is not IGNORE_INDEX: each word's first piece, as the NER pipeline reads them).

    seqeval is an optional dependency (`pip install 'tformer[eval]'`), imported here only.
    """
    try:
        from seqeval.metrics import f1_score, precision_score, recall_score
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise InputError("entity F1 needs seqeval: pip install 'tformer[eval]'") from error
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gold: list[list[str]] = []
    predicted: list[list[str]] = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        targets = batch.pop("labels")
        guesses = model(**batch).logits.argmax(-1)  # (B, T)
        for row_targets, row_guesses in zip(targets.tolist(), guesses.tolist(), strict=True):
            words = [
                (t, g) for t, g in zip(row_targets, row_guesses, strict=True) if t != IGNORE_INDEX
            ]
            gold.append([labels[t] for t, _ in words])
            predicted.append([labels[g] for _, g in words])
    model.train(was_training)
    return {
        "precision": float(precision_score(gold, predicted, zero_division=0)),
        "recall": float(recall_score(gold, predicted, zero_division=0)),
        "f1": float(f1_score(gold, predicted, zero_division=0)),
    }
