"""Padding-free ("unpadded") execution: position-wise layers see only the real tokens.

A batch of sentences of 4 to 44 tokens, right-padded to the longest, is mostly padding (540
of the 1,408 positions of the encoder benchmark's batch are real tokens). BERT
as published, and Hugging Face `BertModel`, still run every projection, feed-forward layer,
norm and residual add over the padding positions, whose outputs nobody reads. Only attention
mixes positions, so an encoder stack can gather the real tokens once into a packed
(N_tokens, d_model) tensor, run everything position-wise on that, and rebuild the padded
(B, T, ...) layout only where attention needs it and for the stack's output. This is the
"remove padding" idea of FasterTransformer's Effective Transformer and ByteTransformer
(Zhai et al., 2023), written with two differentiable index operations: `pack` (a gather) and
`pad` (a scatter into zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class PackedLayout:
    """Where the real tokens of a padded (B, T) batch sit.

    `index` holds, in batch-then-position order, the flat position b * T + t of every token
    whose attention-mask entry is 1, so packed row i is token `index[i]` of the padded batch.
    """

    index: Tensor  # (N,) long
    batch_size: int
    seq_len: int

    @classmethod
    def from_mask(cls, attention_mask: Tensor) -> PackedLayout:
        """From a (B, T) mask, 1 for tokens and 0 for padding (any padding side)."""
        batch_size, seq_len = attention_mask.shape
        index = attention_mask.flatten().nonzero().squeeze(1)  # (N,); syncs on a GPU
        return cls(index, batch_size, seq_len)

    def pack(self, x: Tensor) -> Tensor:
        """(B, T, ...) -> (N, ...): keep the real tokens only."""
        return x.flatten(0, 1).index_select(0, self.index)

    def pad(self, x: Tensor) -> Tensor:
        """(N, ...) -> (B, T, ...): put the tokens back in place, zeros at the padding."""
        padded = x.new_zeros(self.batch_size * self.seq_len, *x.shape[1:])
        padded.index_copy_(0, self.index, x)  # in place: a fresh tensor needs no copy
        return padded.unflatten(0, (self.batch_size, self.seq_len))
