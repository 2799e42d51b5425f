"""The wiring every family shares: embeddings -> positions -> blocks -> final norm.

An encoder is a stack without causality; a GPT is a causal stack; the 2017 decoder is a causal
stack whose blocks also attend to the encoder output. Nothing else differs between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tformer.config import ModelConfig
from tformer.modules.attention import KVCache, build_attention_mask
from tformer.modules.block import DecoderBlock, EncoderBlock, TransformerBlock
from tformer.modules.embedding import TokenEmbedding
from tformer.modules.norm import make_norm
from tformer.modules.packing import PackedLayout
from tformer.modules.position import make_positional


class Embeddings(nn.Module):
    """Token (+ segment) embeddings, absolute positions, optional norm, dropout."""

    def __init__(self, config: ModelConfig, tokens: TokenEmbedding) -> None:
        super().__init__()
        self.tokens = tokens  # shared between encoder, decoder and output projection if tied
        self.segments = (
            nn.Embedding(config.type_vocab_size, config.d_model) if config.type_vocab_size else None
        )
        self.positions = make_positional(
            config.positional,
            max_seq_len=config.max_seq_len,
            d_model=config.d_model,
            head_dim=config.attention_head_dim,
            theta=config.rope_theta,
        )
        self.norm = (
            make_norm(config.norm, config.d_model, config.norm_eps)
            if config.embedding_norm
            else None
        )
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


def _watched(module: nn.Module) -> bool:
    """Whether a hook observes `module` or a module inside it, as the explainer's `capture`
    does: hooks see the tensors a layer computes, so such a pass must keep them (B, T, ...)."""
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in module.modules()
    )


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
        self.padding_free = True  # False: always the padded path (a reference for tests)
        self.embeddings = Embeddings(config, tokens)
        self.blocks = nn.ModuleList(
            DecoderBlock(config, cross_attention=cross_attention)
            if causal
            else EncoderBlock(config)
            for _ in range(n_layers)
        )
        self.final_norm = (
            make_norm(config.norm, config.d_model, config.norm_eps)
            if config.use_final_norm
            else None
        )

    def _packed_layout(
        self, attention_mask: Tensor | None, *, cache: KVCache | None, introspect: bool
    ) -> PackedLayout | None:
        """The layout of the real tokens when this pass runs padding-free, else None.

        Packed (see `tformer.modules.packing`): a non-causal stack (an encoder, or the encoder
        of a seq2seq model) without a KV cache over a batch with padding, in training too.
        Padded: causal stacks and cached passes (decoding keeps (B, H, T, hd) caches per row),
        batches without padding (nothing to skip), `introspect` passes that return every
        layer's attentions or hidden states, passes observed by hooks (which expect (B, T, ...)
        tensors), and `torch.compile` (the token count is data-dependent). Deciding reads the
        mask, a device sync on a GPU. At real positions both paths give the same result; a
        packed pass leaves zeros in the output's padding rows, where the padded path leaves
        values nobody should read.
        """
        if (
            not self.padding_free
            or self.causal
            or cache is not None
            or attention_mask is None
            or introspect
            or torch.compiler.is_compiling()
            or bool(attention_mask.all())
            or _watched(self)
        ):
            return None
        return PackedLayout.from_mask(attention_mask)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        cache: KVCache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> StackOutput:
        """Run the stack over `input_ids` (B, T).

        attention_mask: (B, T_past + T), 1 for tokens and 0 for padding (with a cache it
            covers the cached positions too). position_ids: (B, T); default T_past + 0..T-1,
            right for unpadded and right-padded input; left-padded input must pass its own.
        context, context_mask: encoder output (B, S, d_model) and its padding mask (B, S).
        """
        past_len = cache.seq_len if cache is not None else 0
        length = input_ids.shape[1]
        if past_len + length > self.config.max_seq_len:
            raise ValueError(
                f"sequence of {past_len + length} positions exceeds max_seq_len="
                f"{self.config.max_seq_len}; truncate the input or use a model with a longer context"
            )
        if position_ids is None:
            position_ids = torch.arange(
                past_len, past_len + length, device=input_ids.device
            ).expand_as(input_ids)
        x = self.embeddings(input_ids, position_ids, token_type_ids)
        rotation = self.embeddings.positions.rotation(position_ids)
        mask = build_attention_mask(
            length,
            past_len + length,
            causal=self.causal,
            key_padding_mask=attention_mask,
            device=x.device,
        )
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
                mask=mask,
                rotation=rotation,
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
