"""Question + context -> model inputs of at most max_seq_len tokens, a long context split into
overlapping windows: what extractive question answering trains on and predicts from.

Each window holds the whole question and a stretch of the context, as "[CLS] question [SEP]
context [SEP]"; consecutive windows share `doc_stride` context tokens, so an answer cut by one
window's edge lies whole in the next (BERT paper, 4.2; transformers' question-answering
pipeline and run_qa.py split the same way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Encoding

from tformer.errors import InputError
from tformer.tokenizer import Tokenizer

CONTEXT = 1  # the sequence id of the context in a (question, context) pair encoding
DOC_STRIDE = 128  # context tokens consecutive windows share, unless half a window is less


def default_stride(max_seq_len: int) -> int:
    """The overlap of consecutive windows: 128 tokens, at most half a window."""
    return min(DOC_STRIDE, max_seq_len // 2)


@dataclass(frozen=True)
class Window:
    """One model input: `example` is the index of its question, `encoding` the tokens (with
    character offsets into the context and `sequence_ids`: 0 question, 1 context)."""

    example: int
    encoding: Encoding

    def context_tokens(self) -> list[bool]:
        """Per token, whether it is a piece of the context (an answer may only use those)."""
        return [s == CONTEXT for s in self.encoding.sequence_ids]


def question_windows(
    tokenizer: Tokenizer,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    max_seq_len: int,
    doc_stride: int,
) -> list[Window]:
    """Every window of every (question, context), in order. A question that leaves no more
    than `doc_stride` context tokens per window is an error naming it (windows could not
    advance), as is a doc_stride below 0."""
    if doc_stride < 0:
        raise InputError(f"doc_stride={doc_stride} must be >= 0")
    specials = tokenizer.backend.num_special_tokens_to_add(is_pair=True)
    asked = tokenizer.encode_batch(questions, add_special_tokens=False)
    for i, question in enumerate(asked):
        room = max_seq_len - specials - len(question)
        if room <= doc_stride:
            raise InputError(
                f"question {i} is {len(question)} tokens long: with max_seq_len={max_seq_len} "
                f"that leaves {max(room, 0)} context tokens per window, not more than "
                f"doc_stride={doc_stride}; shorten the question, raise max_seq_len or lower "
                "doc_stride"
            )
    encodings = tokenizer.encodings(questions, contexts, max_length=max_seq_len, stride=doc_stride)
    return [
        Window(i, window)
        for i, encoding in enumerate(encodings)
        for window in (encoding, *encoding.overflowing)
    ]
