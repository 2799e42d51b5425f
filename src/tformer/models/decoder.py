"""DecoderOnlyLM: the GPT-style causal language model (GPT-2, Llama, SmolLM...)."""

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


class DecoderOnlyLM(TformerModel):
    """Causal stack + output projection: predicts token t+1 from tokens 0..t."""

    arch = "decoder"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        tokens = TokenEmbedding(config.vocab_size, config.d_model, scale=config.scale_embeddings)
        self.decoder = TransformerStack(config, tokens, n_layers=config.n_layers, causal=True)
        self.lm_head = LMHead(config, tokens, bias=config.lm_head_bias)
        init_weights(self, config, config.n_layers)

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layers)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        segment_ids: Tensor | None = None,
        labels: Tensor | None = None,
        cache: KVCache | None = None,
        label_smoothing: float = 0.0,
        logits_to_keep: int | Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """input_ids (B, T) -> logits (B, T, vocab).

        labels (B, T): the id to predict *at* each position -- already shifted, i.e.
        labels[:, t] == input_ids[:, t + 1] for plain LM training; -100 positions are ignored.
        attention_mask (B, T_past + T): 1 for tokens, 0 for padding. segment_ids (B, T):
        which packed example each token belongs to (tokens attend within their own; see
        `tformer.data.sft`), with position_ids restarting per example. cache: pass the same
        KVCache across calls to decode incrementally (see `new_cache`). logits_to_keep: only
        the last n positions' logits, (B, n, vocab) (generation keeps 1), or with a (B,)
        tensor each row's own position, (B, 1, vocab).
        """
        out = self.decoder(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            segment_ids=segment_ids,
            cache=cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        return self.lm_head.output(
            out, labels, label_smoothing, logits_to_keep=logits_to_keep, cache=cache
        )
