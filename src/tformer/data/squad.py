"""Extractive question-answering data: SQuAD-format JSON (v1.1, and v2.0's unanswerable
questions), as windows of question + context labelled with the answer's token span.

{"data": [{"paragraphs": [{"context": "...", "qas": [{"id": "...", "question": "...",
"answers": [{"text": "...", "answer_start": 17}], "is_impossible": false}]}]}]}

A question is trained on its first answer. Each window (`tformer.data.question_windows`) is
labelled with the tokens the answer starts and ends at, or with position 0 ([CLS], "no answer
here") when the answer is not wholly inside that window or the question has none (BERT
paper, 4.2-4.3). Answers whose text is not at `answer_start` of the context are errors naming
the file and the line of the question.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tformer.data.collate import SpanCollator
from tformer.data.errors import DataError
from tformer.data.question_windows import Window, default_stride, question_windows
from tformer.data.records import read_text
from tformer.data.task import TaskData, obtain_tokenizer, parse_options, read_splits, resolve_path

NO_ANSWER = (0, 0)  # the [CLS] position, both as start and end


@dataclass(frozen=True)
class Question:
    """One question on `context`; `answers` are (text, start character), [] if unanswerable."""

    question: str
    context: str
    answers: list[tuple[str, int]] = field(default_factory=list)
    id: str = ""


@dataclass
class SquadOptions:
    """`[data]` of task = "qa".

    path: the training file; val_path: the validation file, else a seeded `val_fraction` of
    the training questions. tokenizer: as for classification (a pretrained encoder's path,
    or a kind trained on the training questions and contexts). doc_stride: context tokens
    consecutive windows share (default: 128, or half a window); max_length: tokens per
    window (default: the model's max_seq_len).
    """

    task: str
    path: str
    val_path: str | None = None
    tokenizer: str = "wordpiece"
    vocab_size: int = 8000
    val_fraction: float = 0.2
    seed: int = 0
    max_length: int | None = None
    doc_stride: int | None = None


def read_squad(path: Path) -> list[Question]:
    """The questions of a SQuAD-format file, each checked: a missing key, or an answer whose
    text is not where answer_start says, is a DataError naming the question's line."""
    raw = read_text(path)
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as error:
        raise DataError(path, f"invalid JSON ({error.msg})", error.lineno) from error
    questions = []
    try:
        for article in document["data"]:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    answers = [(a["text"], a["answer_start"]) for a in qa.get("answers", [])]
                    questions.append(Question(qa["question"], context, answers, str(qa["id"])))
                    problem = _answer_problem(questions[-1], qa.get("is_impossible", False))
                    if problem:
                        raise DataError(path, problem, _line(raw, qa))
    except (KeyError, TypeError) as error:
        raise DataError(
            path,
            f"not SQuAD's format (missing or malformed {error}); expected "
            '{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers"}]}]}]}',
        ) from error
    return questions


def _answer_problem(question: Question, impossible: bool) -> str | None:
    if not question.answers and not impossible:
        return f"question {question.id!r} has no answers (and is not marked is_impossible)"
    for text, start in question.answers:
        if not isinstance(start, int) or question.context[start : start + len(text)] != text:
            found = question.context[start : start + len(text)] if isinstance(start, int) else ""
            return (
                f"question {question.id!r}: answer {text!r} is not at answer_start={start!r} "
                f"of its context (found {found!r})"
            )
    return None


def _line(raw: str, qa: dict[str, Any]) -> int | None:
    """The line of the question's `"id"` in the file: where a reader finds the bad row."""
    found = re.search(r'"id"\s*:\s*' + re.escape(json.dumps(qa["id"])), raw)
    return None if found is None else raw.count("\n", 0, found.start()) + 1


def answer_tokens(window: Window, answer: tuple[str, int] | None) -> tuple[int, int]:
    """(start, end) token positions of the answer's characters in `window`, or NO_ANSWER
    when there is no answer or it is not wholly inside the window's context."""
    if answer is None:
        return NO_ANSWER
    first, last = answer[1], answer[1] + len(answer[0])  # characters [first, last)
    context = [
        (i, offsets)
        for i, (offsets, inside) in enumerate(
            zip(window.encoding.offsets, window.context_tokens(), strict=True)
        )
        if inside
    ]
    if not context or context[0][1][0] > first or context[-1][1][1] < last:
        return NO_ANSWER
    start = next(i for i, (_, end) in context if end > first)
    end = next(i for i, (begin, end) in reversed(context) if begin < last)
    return start, end


def build_squad(table: dict, work_dir: Path, base_dirs: list[Path], max_seq_len: int) -> TaskData:
    options = parse_options(SquadOptions, table, "[data]")
    path = resolve_path(options.path, base_dirs)
    train, val, _ = read_splits(
        read_squad, path, options.val_path, options.val_fraction, options.seed, base_dirs
    )
    texts = sorted({q.context for q in train}) + [q.question for q in train]
    tokenizer = obtain_tokenizer(options.tokenizer, texts, options.vocab_size, base_dirs)
    limit = min(max_seq_len, options.max_length or max_seq_len)
    stride = default_stride(limit) if options.doc_stride is None else options.doc_stride

    def encode(questions: list[Question]) -> list[tuple[list[int], list[int], tuple[int, int]]]:
        windows = question_windows(
            tokenizer,
            [q.question for q in questions],
            [q.context for q in questions],
            max_seq_len=limit,
            doc_stride=stride,
        )
        return [
            (
                w.encoding.ids,
                w.encoding.type_ids,
                answer_tokens(w, (questions[w.example].answers or [None])[0]),
            )
            for w in windows
        ]

    pad_id = tokenizer.token_id("pad")
    examples = encode(train)
    return TaskData(
        "qa",
        examples,
        encode(val),
        SpanCollator(pad_id or 0),
        {"vocab_size": tokenizer.vocab_size, "pad_id": pad_id},
        tokenizer,
        train_lengths=[len(ids) for ids, _, _ in examples],
        extras={"val_questions": val, "max_seq_len": limit, "doc_stride": stride},
    )
