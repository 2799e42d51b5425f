"""EncoderModel: the BERT-style bidirectional encoder with a task head chosen by the config."""

from __future__ import annotations

from torch import Tensor

from tformer.config import ModelConfig
from tformer.errors import InputError
from tformer.models.base import TformerModel
from tformer.models.heads import EmbeddingHead, make_encoder_head
from tformer.models.init import init_weights
from tformer.models.output import ModelOutput
from tformer.models.stack import TransformerStack
from tformer.modules.embedding import TokenEmbedding


class EncoderModel(TformerModel):
    """Bidirectional stack + one head: `config.head` is "masked-lm" (default),
    "sequence-classification", "token-classification", "question-answering" or "embedding"."""

    arch = "encoder"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        tokens = TokenEmbedding(config.vocab_size, config.d_model, scale=config.scale_embeddings)
        self.encoder = TransformerStack(config, tokens, n_layers=config.n_layers, causal=False)
        self.head = make_encoder_head(config, tokens)
        init_weights(self, config, config.n_layers)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        labels: Tensor | None = None,
        label_smoothing: float = 0.0,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """input_ids (B, T), attention_mask (B, T) with 1 for tokens and 0 for padding.

        labels: (B, T) token ids / tags with -100 where no loss is wanted (masked-lm,
        token-classification), (B,) class ids (sequence-classification), or (B, 2) answer
        start and end positions (question-answering).
        """
        out = self.encoder(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        result = self.head(out.last_hidden_state, attention_mask)
        is_embedding = isinstance(self.head, EmbeddingHead)
        if labels is not None and is_embedding:
            raise InputError("the embedding head has no training loss; use a classification head")
        return ModelOutput(
            logits=None if is_embedding else result,
            embeddings=result if is_embedding else None,
            loss=self.head.loss(result, labels, label_smoothing) if labels is not None else None,
            last_hidden_state=out.last_hidden_state,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
