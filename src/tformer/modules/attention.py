"""Multi-head attention (paper section 3.2): self, causal and cross; grouped-query heads.

Masks come from `tformer.modules.mask`, cached keys and values from
`tformer.modules.kv_cache`; which of two equal computations runs is `tformer.kernels`' choice.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tformer import kernels
from tformer.errors import InputError
from tformer.modules.kv_cache import CrossAttentionCache, LayerKVCache
from tformer.modules.linear import Linear
from tformer.modules.mask import AttentionMask
from tformer.modules.packing import PackedLayout
from tformer.modules.position import apply_rotary


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = softmax(Q K^T / sqrt(d_k)) V.

    With `n_kv_heads < n_heads` each key/value head serves n_heads / n_kv_heads query heads
    (grouped-query attention, Ainslie et al., 2023). Two computations give the same result:
    `F.scaled_dot_product_attention` (fused) and softmax(Q K^T / sqrt(d_k)) V written out,
    which can return the attention weights (`need_weights`) and which `kernels` picks where
    it is the faster one.

    `q_norm` and `k_norm`, when given, normalise each head's queries and keys (over head_dim)
    before rotary (Qwen3's q/k norm), which keeps the logits of the dot product bounded.
    `softcap` bounds the scores instead, softly: tanh(s / cap) * cap (Gemma 2); the fused
    kernel cannot, so capped attention always runs written out.
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
        qkv_bias: bool | None = None,
        q_norm: nn.Module | None = None,
        k_norm: nn.Module | None = None,
        scale: float | None = None,
        softcap: float | None = None,
    ) -> None:
        """`bias` is the output projection's; `qkv_bias` (None: = bias) the q/k/v ones';
        `scale` the factor on q.k (None: 1 / sqrt(head_dim)); `softcap` the bound on the
        scaled scores (None: unbounded)."""
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.scale = head_dim**-0.5 if scale is None else scale
        self.softcap = softcap
        self.cross = cross
        self.dropout = dropout
        in_bias = bias if qkv_bias is None else qkv_bias
        self.q_proj = Linear(d_model, n_heads * head_dim, bias=in_bias)
        self.k_proj = Linear(d_model, n_kv_heads * head_dim, bias=in_bias)
        self.v_proj = Linear(d_model, n_kv_heads * head_dim, bias=in_bias)
        self.out_proj = Linear(n_heads * head_dim, d_model, bias=bias)
        self.q_norm, self.k_norm = q_norm, k_norm

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
        cache: LayerKVCache | CrossAttentionCache | None = None,
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
        if self.q_norm is not None:
            q = self.q_norm(q)
        if rotation is not None:
            q = apply_rotary(q, *rotation)
        # work: float32 for bf16 where the CPU's bf16 attention is the slower (see kernels)
        dtype, work = q.dtype, kernels.attention_dtype(q, cached=cache is not None)
        q = q.to(work)
        if isinstance(cache, CrossAttentionCache) and cache.key is not None:
            k, v = cache.key, cache.value  # encoder keys/values were projected on step one
        else:
            k, v = self._keys_values(x, context, rotation, layout)  # (B, H_kv, S, hd)
            k, v = k.to(work), v.to(work)  # before caching: the cache holds them as computed
            if isinstance(cache, CrossAttentionCache):
                cache.key, cache.value = k, v
            elif cache is not None:
                k, v = cache.update(k, v)  # (B, H_kv, cached + T, hd)
        assert v is not None

        dropout_p = self.dropout if self.training else 0.0
        if need_weights or kernels.explicit_attention(
            q, k.shape[2], capped=self.softcap is not None
        ):
            out, weights = self._math_attention(q, k, v, mask, dropout_p)
        else:
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask.bias(q.dtype),
                dropout_p=dropout_p,
                is_causal=mask.is_causal,
                scale=self.scale,
                enable_gqa=self.n_kv_heads != self.n_heads,
            )
            weights = None
        out = out.to(dtype).transpose(1, 2).flatten(2)  # (B, T, H * hd)
        if layout is not None:
            out = layout.pack(out)  # (N, H * hd)
        return self.out_proj(out), (weights if need_weights else None)

    def _keys_values(
        self,
        x: Tensor,
        context: Tensor | None,
        rotation: tuple[Tensor, Tensor] | None,
        layout: PackedLayout | None,
    ) -> tuple[Tensor, Tensor]:
        """Keys and values (B, H_kv, S, hd) of `x`, or of the encoder output if cross."""
        if self.cross and context is None:
            raise InputError("cross-attention needs the encoder output as `context`")
        source = context if self.cross and context is not None else x
        kv_layout = None if self.cross else layout  # the encoder output is never packed
        k = self._split_heads(self.k_proj(source), self.n_kv_heads, kv_layout)
        v = self._split_heads(self.v_proj(source), self.n_kv_heads, kv_layout)
        if self.k_norm is not None:
            k = self.k_norm(k)
        if rotation is not None:
            k = apply_rotary(k, *rotation)
        return k, v

    def _math_attention(
        self, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask, dropout_p: float
    ) -> tuple[Tensor, Tensor]:
        """softmax(cap(scale Q K^T) + score bias + mask) V, written out so the weights can
        be returned."""
        groups = self.n_heads // self.n_kv_heads
        if groups > 1:  # (B, H_kv, S, hd) -> (B, H, S, hd): each kv head serves `groups` heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, T, S)
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        if mask.score_bias is not None:
            scores = scores + mask.score_bias.to(scores.dtype)
        allowed = mask.dense(q.shape[2], k.shape[2], q.device)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        weights = scores.float().softmax(dim=-1).to(q.dtype)
        return F.dropout(weights, dropout_p) @ v, weights
