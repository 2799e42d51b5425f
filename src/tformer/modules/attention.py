"""Multi-head attention (paper section 3.2): self, causal and cross; grouped-query heads.

This module is also the one place where masks are made (`build_attention_mask`): padding,
causal and cross-attention masks all come from it, so "which key may a query see" is decided
once for the whole library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tformer.modules.linear import Linear
from tformer.modules.packing import PackedLayout
from tformer.modules.position import apply_rotary


@dataclass
class AttentionMask:
    """Which keys each query may attend to.

    `allowed` is (B or 1, 1, T_query, T_key) bool, True where attention is allowed, or None
    when every key is allowed. `is_causal` marks the pure causal case with T_query == T_key
    and no padding: then `allowed` is None and SDPA's fused causal kernel is used.
    """

    allowed: Tensor | None
    is_causal: bool = False
    _bias: dict[torch.dtype, Tensor] = field(default_factory=dict, repr=False)

    def bias(self, dtype: torch.dtype) -> Tensor | None:
        """Additive form: 0 where allowed, the dtype's lowest finite value where not.

        A finite value rather than -inf keeps a row whose keys are all masked (a fully padded
        sequence) finite: softmax spreads it uniformly instead of producing NaN. Made once per
        dtype, so bf16 attention under autocast gets a bf16 mask.
        """
        if self.allowed is None:
            return None
        if dtype not in self._bias:
            zeros = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
            self._bias[dtype] = zeros.masked_fill(~self.allowed, torch.finfo(dtype).min)
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
    device: torch.device | None = None,
) -> AttentionMask:
    """The one mask function: padding, causal and cross-attention masks.

    Args:
        query_len: number of new query positions T_query.
        key_len: number of key positions T_key. With a KV cache the queries are the *last*
            `query_len` of the `key_len` positions, so query i sits at position
            key_len - query_len + i and causally sees keys 0 .. that position.
        causal: forbid attending to later positions (decoder self-attention).
        key_padding_mask: (B, T_key), 1/True for real tokens, 0/False for padding. Padding keys
            are never attended to; cross-attention passes the source padding mask here.
    """
    if key_padding_mask is not None and key_padding_mask.shape[-1] != key_len:
        raise ValueError(
            f"attention_mask covers {key_padding_mask.shape[-1]} positions but there are "
            f"{key_len} keys (cached + new); pass a mask for every position"
        )
    if key_padding_mask is None:
        if not causal or query_len == 1:
            return AttentionMask(allowed=None)
        if query_len == key_len:
            return AttentionMask(allowed=None, is_causal=True)
    device = key_padding_mask.device if key_padding_mask is not None else device
    allowed = torch.ones(1, 1, query_len, key_len, dtype=torch.bool, device=device)
    if causal:
        query_pos = torch.arange(key_len - query_len, key_len, device=device)
        allowed = allowed & (torch.arange(key_len, device=device) <= query_pos[:, None])
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask.bool()[:, None, None, :]
    return AttentionMask(allowed=allowed)


class LayerKVCache:
    """Keys and values one attention layer has already computed, (B, H_kv, T_past, head_dim).

    Self-attention appends the new positions each step; cross-attention stores the projected
    encoder output once and reuses it for every decoding step. Appending writes into buffers
    that double in length when full, so a decoding step copies only its own keys and values:
    concatenating instead would copy the whole cache at every step (O(T^2) over a generation;
    at 256 tokens, 12 MB per token for SmolLM2-135M). While gradients are recorded it does
    concatenate, as writing in place would change tensors autograd saved.
    """

    def __init__(self) -> None:
        self._key: Tensor | None = None  # (B, H_kv, capacity, hd); slots < length are filled
        self._value: Tensor | None = None
        self.length = 0

    @property
    def key(self) -> Tensor | None:
        """(B, H_kv, T_past, head_dim): the cached keys, a view of the buffer."""
        return None if self._key is None else self._key[:, :, : self.length]

    @property
    def value(self) -> Tensor | None:
        return None if self._value is None else self._value[:, :, : self.length]

    @property
    def seq_len(self) -> int:
        return self.length

    def update(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new positions (B, H_kv, T, hd); return keys and values of all positions
        so far."""
        if self._key is None or self._value is None:
            self._key, self._value = key, value  # the prompt: kept as it is until a step is added
        elif key.requires_grad or value.requires_grad:
            self._key = torch.cat((self._key[:, :, : self.length], key), dim=2)
            self._value = torch.cat((self._value[:, :, : self.length], value), dim=2)
        else:
            end = self.length + key.shape[2]
            if end > self._key.shape[2]:
                self._grow(max(end, 2 * self._key.shape[2]))
            self._key[:, :, self.length : end] = key
            self._value[:, :, self.length : end] = value
        self.length += key.shape[2]
        return self.key, self.value  # type: ignore[return-value]

    def _grow(self, capacity: int) -> None:
        """Move the cached positions into buffers of `capacity` slots."""
        assert self._key is not None and self._value is not None
        old_key, old_value = self._key, self._value
        batch, heads, _, head_dim = old_key.shape
        self._key = old_key.new_empty((batch, heads, capacity, head_dim))
        self._value = old_value.new_empty((batch, heads, capacity, old_value.shape[3]))
        self._key[:, :, : self.length] = old_key[:, :, : self.length]
        self._value[:, :, : self.length] = old_value[:, :, : self.length]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (beam search reorders hypotheses every step)."""
        if self._key is not None and self._value is not None:
            self._key, self._value = self._key[index], self._value[index]


class KVCache:
    """One `LayerKVCache` per decoder layer for self-attention and one for cross-attention."""

    def __init__(self, n_layers: int) -> None:
        self.self_attn = [LayerKVCache() for _ in range(n_layers)]
        self.cross_attn = [LayerKVCache() for _ in range(n_layers)]

    @property
    def seq_len(self) -> int:
        """Positions already processed (the offset of the next token)."""
        return self.self_attn[0].seq_len

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index`; a repeated index expands the batch (one row per beam)."""
        for layer in (*self.self_attn, *self.cross_attn):
            layer.reorder(index)


class StaticLayerKVCache(LayerKVCache):
    """Preallocated keys and values (B, H_kv, capacity, head_dim), written in place.

    Every decode step returns buffers of the same shape, so a compiled decode step
    (`torch.compile`) sees one shape for the whole generation instead of one per length.
    Slots not written yet hold zeros; the caller's attention mask must mark them padding.
    """

    def __init__(self, key: Tensor, value: Tensor, write_index: Tensor) -> None:
        super().__init__()
        self._key, self._value = key, value
        self.length = key.shape[2]  # attention always sees every slot
        self.write_index = write_index  # (1,) long, shared by all layers of one KVCache

    @property
    def seq_len(self) -> int:
        """Key slots before the new token: the stack builds a mask over `capacity` keys."""
        return self.length - 1

    def update(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Write one new position (B, H_kv, 1, head_dim) at `write_index`; return the buffers."""
        assert self._key is not None and self._value is not None
        self._key.index_copy_(2, self.write_index, key)
        self._value.index_copy_(2, self.write_index, value)
        return self._key, self._value

    def reorder(self, index: Tensor) -> None:
        """Permute batch rows in place (the batch size of a static cache is fixed)."""
        assert self._key is not None and self._value is not None
        self._key.copy_(self._key[index])
        self._value.copy_(self._value[index])


class StaticKVCache(KVCache):
    """A KVCache whose self-attention keys/values live in buffers of `capacity` slots.

    Made from a filled dynamic cache after the prompt (prefill), it serves one-token decode
    steps: before each step `claim_slot` picks the slot the new token is written to, and the
    caller passes an attention mask with one entry per slot (1 for slots holding tokens,
    including the new one). Cross-attention entries are fixed-size already and are shared
    with the dynamic cache.
    """

    def __init__(self, cache: KVCache, capacity: int) -> None:
        first = cache.self_attn[0].key
        if first is None:
            raise ValueError("fill the cache with the prompt before making it static")
        self.filled = cache.seq_len
        if self.filled > capacity:
            raise ValueError(
                f"a static KV cache of {capacity} slots cannot hold {self.filled} positions"
            )
        self.capacity = capacity
        self.write_index = torch.zeros(1, dtype=torch.long, device=first.device)
        self.self_attn = [self._allocate(layer) for layer in cache.self_attn]
        self.cross_attn = cache.cross_attn

    def _allocate(self, layer: LayerKVCache) -> StaticLayerKVCache:
        assert layer.key is not None and layer.value is not None
        batch, heads, _, head_dim = layer.key.shape
        key = layer.key.new_zeros((batch, heads, self.capacity, head_dim))
        value = torch.zeros_like(key)
        key[:, :, : self.filled] = layer.key
        value[:, :, : self.filled] = layer.value
        return StaticLayerKVCache(key, value, self.write_index)

    @property
    def seq_len(self) -> int:
        """`capacity - 1`: the stack's key offset for one new token over all the slots."""
        return self.capacity - 1

    def claim_slot(self) -> int:
        """The slot the next decode step writes; a clear error once every slot is used."""
        if self.filled >= self.capacity:
            raise ValueError(
                f"static KV cache is full ({self.capacity} slots); generate fewer tokens or "
                "allocate a larger cache (at most max_seq_len)"
            )
        self.write_index.fill_(self.filled)
        self.filled += 1
        return self.filled - 1


EXPLICIT_MAX_KEYS = 256  # see `explicit_is_faster`


def explicit_is_faster(q: Tensor, key_len: int) -> bool:
    """Whether the explicit softmax(QK^T)V path beats SDPA's fused kernel for this call.

    Only for bfloat16 training on the CPU with at most EXPLICIT_MAX_KEYS keys: there the CPU
    flash-attention kernel's backward pass is 1.3-2.6x slower than two bf16 batched matmuls
    and a softmax (fwd + bwd, 4 heads of 32-64 dims, ~4k tokens, one thread of an
    AVX512-BF16 EPYC), while from 512 keys on, and in float32 or inference everywhere, the
    fused kernel wins (docs/performance.md). The (B, H, T, T) weights this materialises are
    small at such lengths.
    """
    return (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and q.requires_grad
        and key_len <= EXPLICIT_MAX_KEYS
    )


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = softmax(Q K^T / sqrt(d_k)) V.

    With `n_kv_heads < n_heads` each key/value head serves n_heads / n_kv_heads query heads
    (grouped-query attention, Ainslie et al., 2023). Two computations give the same result:
    `F.scaled_dot_product_attention` (fused, the default) and an explicit math path that can
    return the attention weights, chosen per call by `need_weights` or for good by
    `implementation = "math"`.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        *,
        bias: bool,
        dropout: float,
        cross: bool = False,
    ) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.cross = cross
        self.dropout = dropout
        self.implementation = "sdpa"
        self.q_proj = Linear(d_model, n_heads * head_dim, bias=bias)
        self.k_proj = Linear(d_model, n_kv_heads * head_dim, bias=bias)
        self.v_proj = Linear(d_model, n_kv_heads * head_dim, bias=bias)
        self.out_proj = Linear(n_heads * head_dim, d_model, bias=bias)

    def _split_heads(self, x: Tensor, n_heads: int, layout: PackedLayout | None) -> Tensor:
        """(B, T, n_heads * head_dim), or packed (N, n_heads * head_dim) with its `layout`,
        -> (B, n_heads, T, head_dim)."""
        if layout is not None:
            x = layout.pad(x)  # (N, H * hd) -> (B, T, H * hd)
        batch, length, _ = x.shape
        return x.view(batch, length, n_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        *,
        mask: AttentionMask,
        context: Tensor | None = None,
        rotation: tuple[Tensor, Tensor] | None = None,
        cache: LayerKVCache | None = None,
        need_weights: bool = False,
        layout: PackedLayout | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from `x` (B, T, d_model) to itself, or to `context` (B, S, d_model) if cross.

        Returns the output (B, T, d_model) and, if `need_weights`, the attention weights
        (B, n_heads, T, T_key). With a `layout`, `x` and the output are packed tokens
        (N, d_model): the projections run on the tokens only, and queries, keys and values
        are scattered to the padded layout just for the attention product, where `mask` and
        the (B, 1, T, hd) rotary tables apply unchanged.
        """
        q = self._split_heads(self.q_proj(x), self.n_heads, layout)  # (B, H, T, hd)
        if self.cross and cache is not None and cache.key is not None and cache.value is not None:
            k, v = cache.key, cache.value  # encoder keys/values were projected on step one
        else:
            source = context if self.cross else x
            if source is None:
                raise ValueError("cross-attention needs the encoder output as `context`")
            # keys and values (B, H_kv, S, hd); cross-attention's encoder output is never packed
            kv_layout = None if self.cross else layout
            k = self._split_heads(self.k_proj(source), self.n_kv_heads, kv_layout)
            v = self._split_heads(self.v_proj(source), self.n_kv_heads, kv_layout)
            if rotation is not None:
                k = apply_rotary(k, *rotation)
            if cache is not None:
                k, v = cache.update(k, v)  # (B, H_kv, T_past + T, hd)
        if rotation is not None:
            q = apply_rotary(q, *rotation)

        dropout_p = self.dropout if self.training else 0.0
        explicit = self.implementation == "math" or explicit_is_faster(q, k.shape[2])
        if need_weights or explicit:
            out, weights = self._math_attention(q, k, v, mask, dropout_p)
        else:
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask.bias(q.dtype),
                dropout_p=dropout_p,
                is_causal=mask.is_causal,
                enable_gqa=self.n_kv_heads != self.n_heads,
            )
            weights = None
        out = out.transpose(1, 2).flatten(2)  # (B, T, H * hd)
        if layout is not None:
            out = layout.pack(out)  # (N, H * hd)
        return self.out_proj(out), (weights if need_weights else None)

    def _math_attention(
        self, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask, dropout_p: float
    ) -> tuple[Tensor, Tensor]:
        """softmax(Q K^T / sqrt(d_k) + mask) V, written out so the weights can be returned."""
        groups = self.n_heads // self.n_kv_heads
        if groups > 1:  # (B, H_kv, S, hd) -> (B, H, S, hd): each kv head serves `groups` heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, S)
        allowed = mask.dense(q.shape[2], k.shape[2], q.device)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        weights = scores.float().softmax(dim=-1).to(q.dtype)
        return F.dropout(weights, dropout_p) @ v, weights
