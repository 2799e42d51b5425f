"""Extractive question answering: the span of a context that answers a question, and its score.

The context is split into overlapping windows (`tformer.data.question_windows`); in each,
start and end logits become probabilities with a softmax over the context tokens and the
first token ([CLS], the "no answer" slot BERT-style models are trained with), which then
takes no part in answers. A span's score is p(start) * p(end), over spans of at most
`max_answer_len` tokens that end no earlier than they start; the best span of all windows
wins, and its characters are widened to whole words. These are the rules (and defaults) of
transformers' question-answering pipeline (its `select_starts_ends` and `decode_spans`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tformer.data.collate import pad, padding_mask
from tformer.data.question_windows import CONTEXT, Window, default_stride, question_windows
from tformer.errors import InputError
from tformer.models import TformerModel
from tformer.pipelines.batch import require_head
from tformer.tokenizer import Tokenizer

MAX_SEQ_LEN = 384  # tokens per window unless the model's context is shorter
MAX_ANSWER_LEN = 15  # tokens


@dataclass(frozen=True)
class Answer:
    """The answer `context[start:end]`, and its score p(start) * p(end) in its window."""

    text: str
    start: int
    end: int
    score: float


@torch.inference_mode()
def answer_question(
    model: TformerModel,
    tokenizer: Tokenizer,
    question: str,
    context: str,
    *,
    max_seq_len: int | None = None,
    doc_stride: int | None = None,
    max_answer_len: int = MAX_ANSWER_LEN,
    batch_size: int = 8,
) -> Answer:
    """The best answer to `question` in `context`. `max_seq_len` (default: 384 or the model's
    context if shorter) bounds each window; `doc_stride` (default: 128 or half a window)
    is the overlap of consecutive windows."""
    encoder = require_head(
        model,
        "question-answering",
        "question answering",
        'train one with task = "qa", or load a *ForQuestionAnswering',
    )
    if not context.strip():
        raise InputError("the context is empty; give the text the answer is to be found in")
    limit = min(MAX_SEQ_LEN, encoder.config.max_seq_len)
    max_seq_len = limit if max_seq_len is None else max_seq_len
    if not 0 < max_seq_len <= encoder.config.max_seq_len:
        raise InputError(
            f"max_seq_len={max_seq_len} must be in [1, {encoder.config.max_seq_len}] "
            "(the model's context)"
        )
    if max_answer_len < 1:
        raise InputError(f"max_answer_len={max_answer_len} must be >= 1")
    stride = default_stride(max_seq_len) if doc_stride is None else doc_stride
    windows = question_windows(
        tokenizer, [question], [context], max_seq_len=max_seq_len, doc_stride=stride
    )
    best: tuple[float, Window, int, int] | None = None
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        scores = span_scores(encoder, chunk, max_answer_len)  # (W, T, T)
        values, flat = scores.flatten(1).max(dim=1)
        for window, value, index in zip(chunk, values.tolist(), flat.tolist(), strict=True):
            if best is None or value > best[0]:  # ties: the earlier window, as transformers
                best = (value, window, *divmod(index, scores.shape[-1]))
    assert best is not None  # a non-empty context has at least one window
    score, window, start_token, end_token = best
    start, end = _word_chars(window, start_token, end_token)
    return Answer(context[start:end], start, end, score)


def window_inputs(model: TformerModel, windows: list[Window]) -> dict[str, Tensor]:
    """The model call for a batch of windows: ids, padding mask and the tokenizer's segment
    ids (BERT's question 0, context 1; RoBERTa's tokenizer gives 0 to both; a model without
    segment embeddings ignores them)."""
    device = next(model.parameters()).device
    rows = [w.encoding.ids for w in windows]
    return {
        "input_ids": pad(rows, model.config.pad_id or 0).to(device),
        "attention_mask": padding_mask(rows).to(device),
        "token_type_ids": pad([w.encoding.type_ids for w in windows], 0).to(device),
    }


def span_scores(model: TformerModel, windows: list[Window], max_answer_len: int) -> Tensor:
    """(W, T, T): p(start = s) * p(end = e) for the spans s <= e < s + max_answer_len within
    each window's context, 0 elsewhere."""
    logits = model(**window_inputs(model, windows)).logits.float().cpu()  # (W, 2, T)
    length = logits.shape[-1]
    context = pad([w.context_tokens() for w in windows], 0).bool()  # (W, T)
    normalised = context.clone()
    normalised[:, 0] = True  # the no-answer slot takes probability, never an answer
    probs = logits.masked_fill(~normalised[:, None], -torch.inf).softmax(-1)
    probs = probs * context[:, None]  # (W, 2, T)
    spans = torch.ones(length, length).triu().tril(max_answer_len - 1).bool()  # s <= e < s + L
    return probs[:, 0, :, None] * probs[:, 1, None, :] * spans  # (W, T, T)


def _word_chars(window: Window, start_token: int, end_token: int) -> tuple[int, int]:
    """Characters of the context from the start of the first token's word to the end of the
    last token's word."""
    encoding = window.encoding
    words = (encoding.token_to_word(start_token), encoding.token_to_word(end_token))
    if None in words:
        return encoding.offsets[start_token][0], encoding.offsets[end_token][1]
    start = encoding.word_to_chars(words[0], CONTEXT)[0]
    return start, encoding.word_to_chars(words[1], CONTEXT)[1]
