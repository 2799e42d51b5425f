"""The three model families, and `build_model` to pick one from a config."""

from tformer.config import ModelConfig
from tformer.models.base import TformerModel
from tformer.models.decoder import DecoderOnlyLM
from tformer.models.encoder import EncoderModel
from tformer.models.output import ModelOutput
from tformer.models.seq2seq import EncoderDecoder


def build_model(config: ModelConfig) -> TformerModel:
    """A freshly initialised model of the family `config.arch` names."""
    return TformerModel.family(config.arch)(config)


__all__ = [
    "DecoderOnlyLM",
    "EncoderDecoder",
    "EncoderModel",
    "ModelOutput",
    "TformerModel",
    "build_model",
]
