"""SQuAD's exact match and F1 (Rajpurkar et al. 2016): answers compared after the official
normalisation (lower case, punctuation, the articles a/an/the and extra whitespace removed),
each prediction scored against its best-matching reference answer, in percent."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from tformer.data.squad import Question
from tformer.models import TformerModel
from tformer.pipelines.qa import answer_question
from tformer.tokenizer import Tokenizer

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official evaluation script's normalisation."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the normalised words the two answers share (as a bag of words)."""
    ours, theirs = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not ours or not theirs:  # an empty answer matches only an empty answer
        return float(ours == theirs)
    common = sum((Counter(ours) & Counter(theirs)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(ours), common / len(theirs)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """{"exact_match", "f1"} in percent; each prediction against the best of its references
    (an unanswerable question's references are [""])."""
    em = f1 = 0.0
    for prediction, answers in zip(predictions, references, strict=True):
        answers = list(answers) or [""]
        em += max(exact_match(prediction, a) for a in answers)
        f1 += max(token_f1(prediction, a) for a in answers)
    n = max(len(predictions), 1)
    return {"exact_match": 100 * em / n, "f1": 100 * f1 / n}


def answer_scores(
    model: TformerModel,
    tokenizer: Tokenizer,
    questions: Sequence[Question],
    *,
    max_seq_len: int,
    doc_stride: int,
) -> dict:
    """Exact match and F1 of the answers `tformer qa` gives to `questions`."""
    predictions = [
        answer_question(
            model, tokenizer, q.question, q.context, max_seq_len=max_seq_len, doc_stride=doc_stride
        ).text
        for q in questions
    ]
    return squad_scores(predictions, [[text for text, _ in q.answers] for q in questions])
