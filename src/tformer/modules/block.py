"""Transformer blocks: the only place the sub-layers are wired together (paper Figure 1).

Each sub-layer (self-attention, cross-attention, feed-forward) sits in a residual branch with
a norm, either after the addition ("post", the 2017 paper and BERT: LayerNorm(x + Sublayer(x)),
section 5.4) or before the sub-layer ("pre", GPT-2 and Llama: x + Sublayer(Norm(x))).
With `parallel_residual` (GPT-NeoX) the feed-forward reads the block's input rather than the
stream after attention: x + Attention(Norm1(x)) + FFN(Norm2(x)).
Pre-norm blocks with `sandwich_norm` normalise the sub-layer's output too,
x + Norm'(Sublayer(Norm(x))) (Gemma 2/3), which keeps each branch's contribution to the stream
at a fixed scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from tformer.config import ModelConfig
from tformer.modules.attention import MultiHeadAttention
from tformer.modules.feedforward import make_feedforward
from tformer.modules.kv_cache import CrossAttentionCache, LayerKVCache
from tformer.modules.mask import AttentionMask
from tformer.modules.norm import norm_for
from tformer.modules.packing import PackedLayout


@dataclass
class BlockOutput:
    hidden: Tensor  # (B, T, d_model), or (N, d_model) when the block ran on packed tokens
    self_weights: Tensor | None = None  # (B, H, T, T_key) when asked for
    cross_weights: Tensor | None = None  # (B, H, T, S) when asked for


def _attention(config: ModelConfig, *, cross: bool) -> MultiHeadAttention:
    def head_norm() -> nn.Module | None:
        return norm_for(config, config.attention_head_dim) if config.qk_norm else None

    return MultiHeadAttention(
        config.d_model,
        config.n_heads,
        config.kv_heads,
        config.attention_head_dim,
        bias=config.use_attention_bias,
        qkv_bias=config.use_qkv_bias,
        dropout=config.attn_dropout,
        cross=cross,
        q_norm=head_norm(),
        k_norm=head_norm(),
        scale=config.attention_logit_scale,
        softcap=config.attention_softcap,
    )


class TransformerBlock(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each residual and normalised."""

    def __init__(self, config: ModelConfig, *, cross_attention: bool) -> None:
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.parallel = config.parallel_residual
        self.self_attn = _attention(config, cross=False)
        self.self_attn_norm = norm_for(config)
        self.cross_attn = _attention(config, cross=True) if cross_attention else None
        self.cross_attn_norm = norm_for(config) if cross_attention else None
        self.ffn = make_feedforward(
            config.d_model, config.d_ff, config.activation, bias=config.bias
        )
        self.ffn_norm = norm_for(config)
        # the sandwich's second slice: a norm on each sub-layer's output (None: none)
        sandwich = config.sandwich_norm
        self.self_attn_out_norm = norm_for(config) if sandwich else None
        self.cross_attn_out_norm = norm_for(config) if sandwich and cross_attention else None
        self.ffn_out_norm = norm_for(config) if sandwich else None
        self.dropout = nn.Dropout(config.dropout)  # on each sub-layer's output (section 5.4)

    def _residual(
        self,
        x: Tensor,
        norm: nn.Module,
        out_norm: nn.Module | None,
        sublayer: Callable[[Tensor], tuple[Tensor, Tensor | None]],
    ) -> tuple[Tensor, Tensor | None]:
        if self.pre_norm:
            out, weights = sublayer(norm(x))
            if out_norm is not None:
                out = out_norm(out)
            return x + self.dropout(out), weights
        out, weights = sublayer(x)
        return norm(x + self.dropout(out)), weights

    def forward(
        self,
        x: Tensor,
        *,
        mask: AttentionMask,
        rotation: tuple[Tensor, Tensor] | None = None,
        context: Tensor | None = None,
        context_mask: AttentionMask | None = None,
        cache: tuple[LayerKVCache, CrossAttentionCache] | None = None,
        need_weights: bool = False,
        layout: PackedLayout | None = None,
    ) -> BlockOutput:
        """x: (B, T, d_model); context: encoder output (B, S, d_model) for cross-attention.

        With a `layout`, x is the batch's real tokens packed as (N, d_model): the norms,
        residual adds and feed-forward are position-wise and run on them as they are; only
        attention needs the positions, and it asks `layout` for them.
        """
        self_cache, cross_cache = cache if cache is not None else (None, None)
        block_input = x
        x, self_weights = self._residual(
            x,
            self.self_attn_norm,
            self.self_attn_out_norm,
            lambda h: self.self_attn(
                h,
                mask=mask,
                rotation=rotation,
                cache=self_cache,
                need_weights=need_weights,
                layout=layout,
            ),
        )
        cross_weights = None
        if self.cross_attn is not None and self.cross_attn_norm is not None:
            cross_attn = self.cross_attn
            x, cross_weights = self._residual(
                x,
                self.cross_attn_norm,
                self.cross_attn_out_norm,
                lambda h: cross_attn(
                    h,
                    mask=context_mask if context_mask is not None else AttentionMask(None),
                    context=context,
                    cache=cross_cache,
                    need_weights=need_weights,
                    layout=layout,
                ),
            )
        if self.parallel:  # x + attn(norm1(x)) + ffn(norm2(x)): both read the block's input
            x = x + self.dropout(self.ffn(self.ffn_norm(block_input)))
        else:
            x, _ = self._residual(
                x, self.ffn_norm, self.ffn_out_norm, lambda h: (self.ffn(h), None)
            )
        return BlockOutput(x, self_weights, cross_weights)


class EncoderBlock(TransformerBlock):
    """Bidirectional self-attention + feed-forward (Figure 1, left)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, cross_attention=False)


class DecoderBlock(TransformerBlock):
    """Masked self-attention [+ cross-attention over the encoder output] + feed-forward
    (Figure 1, right; without cross-attention it is the GPT block). Causality comes from the
    mask the stack passes in."""

    def __init__(self, config: ModelConfig, *, cross_attention: bool = False) -> None:
        super().__init__(config, cross_attention=cross_attention)
