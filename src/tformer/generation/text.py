"""Streaming text: turn tokens arriving one at a time into printable pieces of text."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence

from torch import Tensor

from tformer.config import ModelConfig
from tformer.tokenizer import Tokenizer


class IncrementalText:
    """The text of a growing list of tokens, handed out as the new piece each token adds.

    Decoding token by token is wrong for byte-level BPE (one character can span tokens) and
    for tokenizers that merge spaces or word pieces, so each step decodes a short window:
    the tokens from the one before the last piece handed out, with and without the new
    ones, and hands out the difference (as Hugging Face's text-generation-inference does).
    The earlier token gives the decoder the context it merges with, and each step costs
    the same however long the output has grown. Text ending in an incomplete character
    (U+FFFD) is held back until a later token completes it (or `flush` gives it out as it
    is).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.start = 0  # first token of the decoded window
        self.shown = 0  # tokens whose text has been handed out

    def push(self, token: int) -> str:
        """Add one token; the text it completes ("" while a character is incomplete)."""
        self.ids.append(token)
        return self._piece(final=False)

    def flush(self) -> str:
        """Whatever is still held back, at the end of the output."""
        return self._piece(final=True)

    def _piece(self, *, final: bool) -> str:
        before = self.tokenizer.decode(self.ids[self.start : self.shown])
        text = self.tokenizer.decode(self.ids[self.start :])
        if len(text) <= len(before) or (text.endswith("\ufffd") and not final):
            return ""
        self.start, self.shown = self.shown, len(self.ids)
        return text[len(before) :]


def stream_text(tokenizer: Tokenizer, tokens: Iterable[int]) -> Iterator[str]:
    """Yield the text each new token adds (see `IncrementalText`)."""
    text = IncrementalText(tokenizer)
    for token in tokens:
        if piece := text.push(token):
            yield piece
    if rest := text.flush():
        yield rest


def end_token_ids(config: ModelConfig) -> set[int]:
    """Tokens that end a generated row: EOS, and the padding that follows it."""
    return {i for i in (config.eos_id, config.pad_id) if i is not None}


def until_end(tokens: Sequence[int], end_ids: Collection[int]) -> list[int]:
    """A generated row up to (not including) its first EOS or padding token."""
    out: list[int] = []
    for token in tokens:
        if token in end_ids:
            break
        out.append(token)
    return out


def decode_rows(tokenizer: Tokenizer, rows: Tensor, end_ids: Collection[int]) -> list[str]:
    """(N, T) generated tokens -> N strings, each cut at its end of sequence."""
    return [tokenizer.decode(until_end(row, end_ids)) for row in rows.tolist()]
