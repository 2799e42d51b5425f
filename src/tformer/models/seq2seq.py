"""EncoderDecoder: the 2017 Transformer ("Attention Is All You Need") for translation."""

from __future__ import annotations

from torch import Tensor

from tformer.config import ModelConfig
from tformer.models.base import TformerModel
from tformer.models.heads import LMHead
from tformer.models.init import init_weights
from tformer.models.output import ModelOutput
from tformer.models.stack import TransformerStack
from tformer.modules.embedding import TokenEmbedding
from tformer.modules.kv_cache import KVCache


class EncoderDecoder(TformerModel):
    """Encoder stack over the source, causal decoder stack with cross-attention over the
    encoder output, output projection. One embedding matrix serves source, target and output
    when tied (section 3.4: a shared source-target BPE vocabulary)."""

    arch = "encoder-decoder"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        tokens = TokenEmbedding(config.vocab_size, config.d_model, scale=config.scale_embeddings)
        self.encoder = TransformerStack(
            config, tokens, n_layers=config.encoder_layers, causal=False
        )
        self.decoder = TransformerStack(
            config, tokens, n_layers=config.decoder_layers, causal=True, cross_attention=True
        )
        self.lm_head = LMHead(config, tokens, bias=config.lm_head_bias)
        init_weights(self, config, config.encoder_layers + config.decoder_layers)

    def new_cache(self) -> KVCache:
        return KVCache(self.config.decoder_layers)

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Source ids (B, S) -> encoder output ("memory") (B, S, d_model)."""
        return self.encoder(input_ids, attention_mask=attention_mask).last_hidden_state

    def decode(
        self,
        decoder_input_ids: Tensor,
        encoder_output: Tensor,
        *,
        attention_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        decoder_position_ids: Tensor | None = None,
        labels: Tensor | None = None,
        cache: KVCache | None = None,
        label_smoothing: float = 0.0,
        logits_to_keep: int | Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """Target ids (B, T) attending to `encoder_output` (B, S, d_model) -> logits (B, T, vocab).

        attention_mask: the source padding mask (B, S); decoder_attention_mask: the target's
        (B, T_past + T). labels (B, T): the next target token at each position, -100 ignored.
        logits_to_keep: only the last n positions' logits, (B, n, vocab), or with a (B,)
        tensor each row's own position, (B, 1, vocab).
        """
        out = self.decoder(
            decoder_input_ids,
            attention_mask=decoder_attention_mask,
            position_ids=decoder_position_ids,
            context=encoder_output,
            context_mask=attention_mask,
            cache=cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        return self.lm_head.output(
            out,
            labels,
            label_smoothing,
            logits_to_keep=logits_to_keep,
            encoder_last_hidden_state=encoder_output,
            cache=cache,
        )

    def forward(
        self,
        input_ids: Tensor,
        decoder_input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        label_smoothing: float = 0.0,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """Teacher-forced pass: source (B, S) and shifted-right target (B, T) -> logits (B, T, vocab)."""
        memory = self.encode(input_ids, attention_mask)
        return self.decode(
            decoder_input_ids,
            memory,
            attention_mask=attention_mask,
            decoder_attention_mask=decoder_attention_mask,
            labels=labels,
            label_smoothing=label_smoothing,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
