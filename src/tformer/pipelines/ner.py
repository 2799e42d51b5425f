"""Named-entity recognition: the entities of a text, as labels over character spans.

A token classifier predicts a tag per sub-word token. Each word takes the prediction of its
first sub-word (the token that training labels, see `tformer.data.tagging`): its most likely
tag and that tag's probability. Words are the tokenizer's pre-tokenizer words (for BERT's
WordPiece: split on whitespace and punctuation, "##" pieces continue a word). Adjacent words
then join into one entity while they share a tag and the later one does not begin a new
entity: "B-PER I-PER" is one PER, "B-PER B-PER" two, and IOB1's "I-PER I-PER" one; tags
without a B-/I- prefix join when equal. Words tagged "O" are no entity. This is
transformers' token-classification pipeline with aggregation_strategy="first".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tokenizers import Encoding
from torch import Tensor

from tformer.data.collate import pad, padding_mask
from tformer.errors import InputError
from tformer.models import TformerModel
from tformer.pipelines.batch import label_names, require_head
from tformer.tokenizer import Tokenizer

OUTSIDE = "O"  # the tag of words that belong to no entity


@dataclass(frozen=True)
class Entity:
    """One entity: `text == source[start:end]`; score is the mean of its words' scores."""

    label: str
    text: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class TaggedWord:
    """A word of the text (characters start:end), its tag and the tag's probability."""

    tag: str
    start: int
    end: int
    score: float


def split_tag(tag: str) -> tuple[str, str]:
    """("B" or "I", entity type) of an IOB tag; a tag without a prefix continues ("I")."""
    if tag.startswith(("B-", "I-")):
        return tag[0], tag[2:]
    return "I", tag


@torch.inference_mode()
def ner(
    model: TformerModel, tokenizer: Tokenizer, texts: Sequence[str], *, batch_size: int = 32
) -> list[list[Entity]]:
    """The entities of each text, in order. A text longer than the model's context is an
    error (its entities past the cut would be lost without a word)."""
    encoder = require_head(
        model,
        "token-classification",
        "entity recognition",
        'train one with task = "ner", or load a *ForTokenClassification',
    )
    config = encoder.config
    tags = label_names(encoder)
    results = []
    for first in range(0, len(texts), batch_size):
        chunk = texts[first : first + batch_size]
        encodings = tokenizer.encodings(chunk)
        for i, encoding in enumerate(encodings):
            if len(encoding.ids) > config.max_seq_len:
                raise InputError(
                    f"text {first + i} is {len(encoding.ids)} tokens long, more than the "
                    f"model's max_seq_len={config.max_seq_len}; split it"
                )
        probs = _tag_probabilities(encoder, [e.ids for e in encodings])  # (B, T, n_tags)
        for text, encoding, row in zip(chunk, encodings, probs, strict=True):
            results.append(group_entities(text, tag_words(encoding, row, tags)))
    return results


def _tag_probabilities(model: TformerModel, rows: list[list[int]]) -> Tensor:
    device = next(model.parameters()).device
    ids = pad(rows, model.config.pad_id or 0).to(device)
    logits = model(ids, attention_mask=padding_mask(rows).to(device)).logits  # (B, T, n_tags)
    return logits.float().softmax(-1).cpu()


def tag_words(encoding: Encoding, probs: Tensor, tags: Sequence[str]) -> list[TaggedWord]:
    """Each word's tag and score from its first sub-word; its span over all of its pieces.
    probs: (T, n_tags), the tag probabilities of the encoding's tokens."""
    words: list[TaggedWord] = []
    last_word = None
    for i, word in enumerate(encoding.word_ids):
        if word is None or encoding.special_tokens_mask[i]:
            continue
        start, end = encoding.offsets[i]
        if word == last_word:  # a later piece of the same word: it only extends the span
            words[-1] = TaggedWord(words[-1].tag, words[-1].start, end, words[-1].score)
            continue
        best = int(probs[i].argmax())
        words.append(TaggedWord(tags[best], start, end, float(probs[i, best])))
        last_word = word
    return words


def group_entities(text: str, words: Sequence[TaggedWord]) -> list[Entity]:
    """Adjacent words that continue one entity, as entities of `text` ("O" words dropped)."""
    groups: list[list[TaggedWord]] = []
    for word in words:
        prefix, kind = split_tag(word.tag)
        if groups and prefix != "B" and split_tag(groups[-1][-1].tag)[1] == kind:
            groups[-1].append(word)
        else:
            groups.append([word])
    entities = []
    for group in groups:
        label = group[0].tag.split("-", 1)[-1]
        if label == OUTSIDE:
            continue
        start, end = group[0].start, group[-1].end
        score = sum(w.score for w in group) / len(group)
        entities.append(Entity(label, text[start:end], start, end, score))
    return entities
