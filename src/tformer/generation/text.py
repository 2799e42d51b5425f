"""Streaming text: turn tokens arriving one at a time into printable pieces of text."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence

from torch import Tensor

from tformer.config import ModelConfig
from tformer.tokenizer import Tokenizer


def stream_text(tokenizer: Tokenizer, tokens: Iterable[int]) -> Iterator[str]:
    """Yield the text each new token adds.

    Decoding token by token is wrong for byte-level BPE (one character can span tokens) and
    for tokenizers that merge spaces, so the whole output so far is decoded and only the new
    suffix is yielded; text ending in an incomplete character (U+FFFD) is held back until the
    next token completes it.
    """
    ids: list[int] = []
    shown = 0
    for token in tokens:
        ids.append(token)
        text = tokenizer.decode(ids)
        if text.endswith("\ufffd"):
            continue
        if len(text) > shown:
            yield text[shown:]
            shown = len(text)
    text = tokenizer.decode(ids)
    if len(text) > shown:
        yield text[shown:]


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
