"""Weight initialisation shared by all families."""

from __future__ import annotations

import math

from torch import nn

from tformer.config import ModelConfig
from tformer.modules.embedding import TokenEmbedding
from tformer.modules.position import LearnedPositions, RelativePositionBias


def init_weights(model: nn.Module, config: ModelConfig, n_residual_layers: int) -> None:
    """Normal(0, init_std) weights and zero biases (GPT-2 / BERT), norms at identity.

    Projections that write into the residual stream (attention output, FFN down) are scaled by
    1/sqrt(2 * n_residual_layers), as in GPT-2, so the stream's variance does not grow with depth.
    """
    if any(p.is_meta for p in model.parameters()):
        return  # built without values (`models.empty`): a loader fills every tensor
    std = config.init_std
    residual_std = std / math.sqrt(2 * max(n_residual_layers, 1))
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            is_residual = name.endswith(("out_proj", "ffn.down"))
            nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual else std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(
            module, (TokenEmbedding, LearnedPositions, RelativePositionBias, nn.Embedding)
        ):
            nn.init.normal_(module.weight, mean=0.0, std=std)
