"""The wiring every family shares: embeddings -> positions -> blocks -> final norm.

An encoder is a stack without causality; a GPT is a causal stack; the 2017 decoder is a causal
stack whose blocks also attend to the encoder output. Nothing else differs between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tformer import kernels
from tformer.config import ModelConfig
from tformer.errors import InputError
from tformer.modules.block import DecoderBlock, EncoderBlock, TransformerBlock
from tformer.modules.embedding import TokenEmbedding
from tformer.modules.kv_cache import KVCache
from tformer.modules.mask import build_attention_mask
from tformer.modules.norm import norm_for
from tformer.modules.packing import PackedLayout
from tformer.modules.position import (
    RelativeBuckets,
    RopeScaling,
    RotaryPositions,
    make_positional,
    positions_skipping_padding,
)


def _rope_scaling(config: ModelConfig) -> RopeScaling | None:
    if config.rope_scaling is None:
        return None
    return RopeScaling(
        config.rope_scaling,
        config.rope_factor,
        config.rope_low_freq_factor,
        config.rope_high_freq_factor,
        config.rope_original_max_seq_len or 0,
    )


class Embeddings(nn.Module):
    """Token (+ segment) embeddings, absolute positions, optional norm, dropout.

    `positions` also holds what attention needs of them (rotary tables, or relative
    biases, which look both ways unless the stack is `causal`).
    """

    def __init__(self, config: ModelConfig, tokens: TokenEmbedding, *, causal: bool) -> None:
        super().__init__()
        self.tokens = tokens  # shared between encoder, decoder and output projection if tied
        self.segments = (
            TokenEmbedding(config.type_vocab_size, config.d_model)
            if config.type_vocab_size
            else None
        )
        self.positions = make_positional(
            config.positional,
            max_seq_len=config.max_seq_len,
            d_model=config.d_model,
            rotary_dim=config.rotary_dim,
            theta=config.rope_theta,
            scaling=_rope_scaling(config),
            offset=config.position_offset,
            layout=config.sinusoidal_layout,
            relative=RelativeBuckets(
                config.n_heads,
                config.relative_buckets,
                config.relative_max_distance,
                bidirectional=not causal,
            ),
        )
        self.norm = norm_for(config) if config.embedding_norm else None
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, input_ids: Tensor, position_ids: Tensor, token_type_ids: Tensor | None
    ) -> Tensor:
        """(B, T) ids -> (B, T, d_model)."""
        x = self.tokens(input_ids)
        if self.segments is not None:
            x = x + self.segments(
                token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            )
        x = self.positions.add(x, position_ids)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


@dataclass
class StackOutput:
    last_hidden_state: Tensor  # (B, T, d_model); zeros at padding after a packed pass
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None


class TransformerStack(nn.Module):
    """N blocks over embedded tokens; causal and/or with cross-attention as configured."""

    def __init__(
        self,
        config: ModelConfig,
        tokens: TokenEmbedding,
        *,
        n_layers: int,
        causal: bool,
        cross_attention: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.causal = causal
        # False: always the padded layout (observers such as the explainer's hooks, which
        # expect (B, T, ...) tensors, and tests that compare both paths turn it off)
        self.padding_free = True
        self.embeddings = Embeddings(config, tokens, causal=causal)
        self.blocks = nn.ModuleList(
            DecoderBlock(config, cross_attention=cross_attention)
            if causal
            else EncoderBlock(config)
            for _ in range(n_layers)
        )
        if not config.first_block_attn_norm:  # the embedding norm has just normalised x
            self.blocks[0].self_attn_norm = nn.Identity()
        self.final_norm = norm_for(config) if config.use_final_norm else None
        self.block_types = config.block_types(n_layers)
        # "sliding" blocks' own rotary tables (Gemma 3, ModernBERT); None: the shared ones
        self.local_rotary = (
            RotaryPositions(config.rotary_dim, config.rope_local_theta)
            if config.rope_local_theta is not None
            else None
        )

    def _packed_layout(
        self, attention_mask: Tensor | None, *, cache: KVCache | None, introspect: bool
    ) -> PackedLayout | None:
        """The layout of the real tokens when this pass runs padding-free, else None.

        Only a non-causal stack (an encoder, or the encoder of a seq2seq model) without a KV
        cache can: causal and cached passes keep (B, H, T, hd) caches per row. `introspect`
        passes, which return every layer's attentions or hidden states, keep the padded
        layout; whether packing pays for the batch at hand is `kernels`' choice. At real
        positions both layouts give the same result; a packed pass leaves zeros in the
        output's padding rows, where the padded one leaves values nobody should read.
        """
        if not self.padding_free or self.causal or cache is not None or introspect:
            return None
        if not kernels.use_packed_layout(attention_mask):
            return None
        assert attention_mask is not None
        return PackedLayout.from_mask(attention_mask)

    def _default_positions(self, input_ids: Tensor, cache: KVCache | None) -> Tensor:
        """(B, T) positions: after each row's cached tokens, else 0..T-1 -- or, for a config
        with `positions_skip_padding` (RoBERTa), counted over the non-pad ids alone."""
        if cache is not None:
            return cache.next_positions(input_ids.shape[1])
        if self.config.positions_skip_padding:
            assert self.config.pad_id is not None  # ModelConfig requires one
            return positions_skipping_padding(input_ids, self.config.pad_id)
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        segment_ids: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        cache: KVCache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> StackOutput:
        """Run the stack over `input_ids` (B, T).

        attention_mask: (B, K), 1 for tokens and 0 for padding, over the K key slots
            attention sees (with a cache, `cache.key_slots(T)`: the cached ones too).
        position_ids: (B, T); default: each row's cached length + 0..T-1 (0..T-1 without a
            cache), right for unpadded and right-padded input; left-padded input must pass
            its own (unless the config has `positions_skip_padding`). Position 0 is the first
            token's whatever the config's `position_offset`.
        segment_ids: (B, K), the example each key slot belongs to when short examples are
            packed into one row: tokens attend within their own example only (pass
            position_ids that restart at 0 for each example too).
        context, context_mask: encoder output (B, S, d_model) and its padding mask (B, S).
        cache: its rows' lengths advance by T.
        """
        batch, length = input_ids.shape
        key_len = cache.key_slots(length) if cache is not None else length
        if key_len > self.config.max_seq_len:
            raise InputError(
                f"sequence of {key_len} positions exceeds max_seq_len="
                f"{self.config.max_seq_len}; truncate the input or use a model with a longer context"
            )
        cached = cache is not None and cache.lengths is not None
        if position_ids is None:
            position_ids = self._default_positions(input_ids, cache if cached else None)
        x = self.embeddings(input_ids, position_ids, token_type_ids)
        # the masks and rotary tables of "full" and of "sliding" blocks, made once per pass
        rotations = {"full": self.embeddings.positions.rotation(position_ids)}
        rotations["sliding"] = (
            self.local_rotary.rotation(position_ids)
            if self.local_rotary is not None
            else rotations["full"]
        )
        masks = {
            kind: build_attention_mask(
                length,
                key_len,
                causal=self.causal,
                key_padding_mask=attention_mask,
                query_offsets=cache.query_offsets() if cached else None,  # type: ignore[union-attr]
                segment_ids=segment_ids,
                window=self.config.sliding_window if kind == "sliding" else None,
                score_bias=self.embeddings.positions.score_bias(),
                device=x.device,
            )
            for kind in set(self.block_types)
        }
        cross_mask = None
        if context is not None:
            cross_mask = build_attention_mask(
                length,
                context.shape[1],
                causal=False,
                key_padding_mask=context_mask,
                device=x.device,
            )

        layout = self._packed_layout(
            attention_mask, cache=cache, introspect=output_attentions or output_hidden_states
        )
        if layout is not None:
            x = layout.pack(x)  # (B, T, d_model) -> (N, d_model)

        hidden_states = [x] if output_hidden_states else None
        attentions: list[Tensor] = []
        cross_attentions: list[Tensor] = []
        block: TransformerBlock
        for i, block in enumerate(self.blocks):
            layer_cache = (cache.self_attn[i], cache.cross_attn[i]) if cache is not None else None
            out = block(
                x,
                mask=masks[self.block_types[i]],
                rotation=rotations[self.block_types[i]],
                context=context,
                context_mask=cross_mask,
                cache=layer_cache,
                need_weights=output_attentions,
                layout=layout,
            )
            x = out.hidden
            if hidden_states is not None:
                hidden_states.append(x)
            if out.self_weights is not None:
                attentions.append(out.self_weights)
            if out.cross_weights is not None:
                cross_attentions.append(out.cross_weights)
        if cache is not None:
            cache.advance(length, batch, input_ids.device)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if layout is not None:
            x = layout.pad(x)  # (N, d_model) -> (B, T, d_model)
        return StackOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if output_attentions else None,
            cross_attentions=tuple(cross_attentions)
            if output_attentions and context is not None
            else None,
        )
