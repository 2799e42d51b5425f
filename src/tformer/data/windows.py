"""Fixed-length windows over a token array (memory-mapped or not): causal-LM and MLM examples."""

from __future__ import annotations

import numpy as np

from tformer.errors import InputError


class TokenWindows:
    """Example i is tokens[i * stride : i * stride + window], a (window,) int64 array.

    The corpus is one packed stream of documents (separated by EOS where the tokenizer adds
    one), so every window is full and no padding is needed. stride=window gives disjoint
    blocks; stride=1 gives every offset (nanoGPT's random windows, drawn without replacement).
    """

    def __init__(self, tokens: np.ndarray, window: int, stride: int | None = None) -> None:
        self.stride = window if stride is None else stride
        if len(tokens) < window:
            raise InputError(
                f"{len(tokens)} tokens cannot fill one window of {window}; "
                "use a smaller block_size or a larger corpus"
            )
        self.tokens, self.window = tokens, window

    def __len__(self) -> int:
        return (len(self.tokens) - self.window) // self.stride + 1

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)  # also ends iteration: `for window in windows`
        start = index * self.stride
        return np.asarray(self.tokens[start : start + self.window], dtype=np.int64)
