"""The one mask function: which keys each query may attend to.

Padding, causal, cross-attention and packed-example (block-diagonal) masks are all made by
`build_attention_mask`, so "which key may a query see" is decided once for the whole library
(and tested once for padding invariance, causality and example isolation). A bias on the
scores by key-minus-query distance (T5's relative positions) is added in the same place, so
the fused attention kernel still runs: it is one more term of the additive mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tformer.errors import InputError


@dataclass
class AttentionMask:
    """Which keys each query may attend to.

    `allowed` is (B or 1, 1, T_query, T_key) bool, True where attention is allowed, or None
    when every key is allowed. `is_causal` marks the pure causal case with T_query == T_key
    and no padding: then `allowed` is None and SDPA's fused causal kernel is used.
    `score_bias` (B or 1, H, T_query, T_key), when given, is added to the scores of allowed
    keys (relative position biases).
    """

    allowed: Tensor | None
    is_causal: bool = False
    score_bias: Tensor | None = None
    _bias: dict[torch.dtype, Tensor] = field(default_factory=dict, repr=False)

    def bias(self, dtype: torch.dtype) -> Tensor | None:
        """Additive form: `score_bias` (or 0) where allowed, the dtype's lowest finite value
        where not.

        A finite value rather than -inf keeps a row whose keys are all masked (a fully padded
        sequence) finite: softmax spreads it uniformly instead of producing NaN. Made once per
        dtype, so bf16 attention under autocast gets a bf16 mask.
        """
        if self.allowed is None and self.score_bias is None:
            return None
        if dtype not in self._bias:
            if self.score_bias is not None:
                bias = self.score_bias.to(dtype)
            else:
                assert self.allowed is not None
                bias = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
            if self.allowed is not None:
                bias = bias.masked_fill(~self.allowed, torch.finfo(dtype).min)
            self._bias[dtype] = bias
        return self._bias[dtype]

    def dense(self, query_len: int, key_len: int, device: torch.device) -> Tensor | None:
        """`allowed` with the implicit causal triangle made explicit (for the math path)."""
        if self.is_causal:
            return torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril()[
                None, None
            ]
        return self.allowed


def build_attention_mask(
    query_len: int,
    key_len: int,
    *,
    causal: bool,
    key_padding_mask: Tensor | None = None,
    query_offsets: Tensor | None = None,
    segment_ids: Tensor | None = None,
    window: int | None = None,
    score_bias: Callable[[Tensor], Tensor] | None = None,
    device: torch.device | None = None,
) -> AttentionMask:
    """The one mask function: padding, causal, cross-attention and packed-example masks.

    Args:
        query_len: number of new query positions T_query.
        key_len: number of key slots T_key the queries attend over.
        causal: forbid attending to later positions (decoder self-attention).
        key_padding_mask: (B, T_key), 1/True for real tokens, 0/False for padding. Padding keys
            are never attended to; cross-attention passes the source padding mask here.
        query_offsets: (B,) long, the key slot of each row's first query, when rows of a KV
            cache hold different numbers of positions: query i of row b sits at slot
            query_offsets[b] + i, and slots past query_offsets[b] + query_len hold nothing
            yet. None: every row's queries are the last `query_len` of the `key_len` slots.
        segment_ids: (B, T_key) ints, the example each slot belongs to when several short
            examples are packed into one row (supervised fine-tuning): a query sees only the
            keys of its own example, so with `causal` the mask is block-diagonal causal and
            the row computes what the examples would compute one by one.
        window: sliding-window (local) attention. With `causal`, a query sees only the
            last `window` slots, its own included (Mistral, Gemma): key slot j is allowed for
            the query at slot i iff i - window < j <= i. Without, it sees `window // 2` slots
            on either side (ModernBERT's local attention): iff |i - j| <= window // 2.
        score_bias: maps the (B or 1, T_query, T_key) key-minus-query distances, counted in
            slots, to biases (B or 1, H, T_query, T_key) added to the scores (T5's relative
            positions). Slots are positions apart wherever both hold tokens of one sequence
            (a left-padded row's tokens sit in consecutive slots too), so a cached query
            sees each key at its true distance.
    """
    if window is not None and (window if causal else window // 2 + 1) >= key_len:
        window = None  # every key is within the window
    for name, given in (("attention_mask", key_padding_mask), ("segment_ids", segment_ids)):
        if given is not None and given.shape[-1] != key_len:
            raise InputError(
                f"{name} covers {given.shape[-1]} positions but there are "
                f"{key_len} keys (cached + new); pass a value for every position"
            )
    if (
        key_padding_mask is None
        and query_offsets is None
        and segment_ids is None
        and window is None
        and score_bias is None
    ):
        if not causal or query_len == 1:
            return AttentionMask(allowed=None)
        if query_len == key_len:
            return AttentionMask(allowed=None, is_causal=True)
    for given in (key_padding_mask, query_offsets, segment_ids):
        if given is not None:
            device = given.device
    keys = torch.arange(key_len, device=device)  # (T_key,)
    if query_offsets is None:
        first = torch.tensor([key_len - query_len], device=device)  # (1,): the same for all rows
    else:
        first = query_offsets
    query_slots = first[:, None] + torch.arange(query_len, device=device)  # (B or 1, T_query)
    if causal:  # (B or 1, T_query, T_key): a query sees its own slot and earlier ones
        allowed = keys <= query_slots[:, :, None]
        if window is not None:  # ... but only the last `window` of them
            allowed = allowed & (keys > query_slots[:, :, None] - window)
    else:  # every slot written so far, including this pass's
        allowed = (keys < query_slots[:, -1:, None] + 1).expand(-1, query_len, -1)
        if window is not None:  # ... but only those within window // 2 on either side
            allowed = allowed & ((keys - query_slots[:, :, None]).abs() <= window // 2)
    if segment_ids is not None:  # a query sees the keys of its own example only
        query_segments = segment_ids.gather(1, query_slots.expand(len(segment_ids), -1))
        allowed = allowed & (query_segments[:, :, None] == segment_ids[:, None, :])
    allowed = allowed[:, None]  # (B or 1, 1, T_query, T_key)
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask.bool()[:, None, None, :]
    if score_bias is None:
        return AttentionMask(allowed=allowed)
    distances = keys - query_slots[:, :, None]  # (B or 1, T_query, T_key)
    return AttentionMask(allowed=allowed, score_bias=score_bias(distances))
