"""Normalisation layers: LayerNorm (2017 paper, BERT, GPT-2) and RMSNorm (Llama, Gemma)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tformer.config import ModelConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich, 2019): rescales without re-centring.

    Normalised in float32 so bf16 activations keep precision. The scale is
    `weight_offset + weight`: Gemma stores w and scales by (1 + w) (weights start at zero),
    everyone else stores the scale itself (offset 0, weights start at one). Each multiplies
    where its reference does: Llama after casting back, Gemma in float32 before the cast.
    """

    def __init__(self, d_model: int, eps: float = 1e-6, weight_offset: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        self.weight_offset = weight_offset
        self.weight = nn.Parameter(torch.full((d_model,), 1.0 - weight_offset))

    def forward(self, x: Tensor) -> Tensor:
        normed = nn.functional.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        if self.weight_offset:
            return (normed * (self.weight_offset + self.weight.float())).type_as(x)
        return normed.type_as(x) * self.weight


def make_norm(
    kind: str, d_model: int, eps: float, *, bias: bool = True, weight_offset: float = 0.0
) -> nn.Module:
    """The norm named by `ModelConfig.norm` (`bias`: a LayerNorm's, ModelConfig.norm_bias;
    `weight_offset`: an RMSNorm's, ModelConfig.norm_weight_offset)."""
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps, weight_offset)
    return nn.LayerNorm(d_model, eps=eps, bias=bias)


def norm_for(config: ModelConfig, dim: int | None = None) -> nn.Module:
    """The config's norm over `dim` features (None: d_model), with its eps, bias and weight
    offset."""
    features = config.d_model if dim is None else dim
    return make_norm(
        config.norm,
        features,
        config.norm_eps,
        bias=config.norm_bias,
        weight_offset=config.norm_weight_offset,
    )
