"""Streaming text: turn tokens arriving one at a time into printable pieces of text."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence

from torch import Tensor

from tformer.config import ModelConfig
from tformer.tokenizer import Tokenizer


class IncrementalText:
    """The text of a growing list of tokens, handed out as the new piece each token adds.

    Decoding token by token is wrong for byte-level BPE (one character can span tokens) and
    for tokenizers that merge spaces, so the whole output so far is decoded and only the new
    suffix is returned; text ending in an incomplete character (U+FFFD) is held back until a
    later token completes it (or `flush` gives it out as it is).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.shown = 0  # characters handed out so far

    def push(self, token: int) -> str:
        """Add one token; the text it completes ("" while a character is incomplete)."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        return self._new(text)

    def flush(self) -> str:
        """Whatever is still held back, at the end of the output."""
        return self._new(self.tokenizer.decode(self.ids))

    def _new(self, text: str) -> str:
        piece, self.shown = text[self.shown :], max(self.shown, len(text))
        return piece


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
