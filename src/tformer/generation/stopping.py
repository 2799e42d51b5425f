"""When a row is done: end-of-sequence tokens, and stop strings found in the decoded text."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tformer.errors import InputError
from tformer.tokenizer import Tokenizer


class StopStrings:
    """Finishes a row once its generated text contains one of `strings`.

    Only the last few tokens are decoded each step (enough to hold the longest stop string,
    since every token decodes to at least one character or to nothing), so the cost does not
    grow with the length of the output. Like Hugging Face, the row keeps the token that
    completed the stop string.
    """

    def __init__(self, tokenizer: Tokenizer | None, strings: Sequence[str]) -> None:
        if tokenizer is None:
            raise InputError("stop_strings need a tokenizer to decode the text: pass tokenizer=")
        if any(not s for s in strings):
            raise InputError("stop_strings must be non-empty strings")
        self.tokenizer = tokenizer
        self.strings = tuple(strings)
        self.window = max(len(s) for s in strings) + 4  # + a few tokens that decode to ""

    def __call__(self, generated: Tensor) -> Tensor:
        """generated (N, t) -> (N,) bool: whether the row's new text holds a stop string."""
        tails = generated[:, -self.window :].tolist()
        texts = (self.tokenizer.decode(tail, skip_special_tokens=False) for tail in tails)
        hits = [any(s in text for s in self.strings) for text in texts]
        return torch.tensor(hits, dtype=torch.bool, device=generated.device)
