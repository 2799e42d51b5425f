"""Normalisation layers: LayerNorm (2017 paper, BERT, GPT-2) and RMSNorm (Llama)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tformer.config import ModelConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich, 2019): rescales without re-centring.

    Computed in float32 and cast back, as Llama does, so bf16 activations keep precision.
    """

    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        return (
            nn.functional.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x) * self.weight
        )


def make_norm(kind: str, d_model: int, eps: float, *, bias: bool = True) -> nn.Module:
    """The norm named by `ModelConfig.norm` (`bias`: a LayerNorm's, ModelConfig.norm_bias)."""
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps)
    return nn.LayerNorm(d_model, eps=eps, bias=bias)


def norm_for(config: ModelConfig, dim: int | None = None) -> nn.Module:
    """The config's norm over `dim` features (None: d_model), with its eps and bias."""
    features = config.d_model if dim is None else dim
    return make_norm(config.norm, features, config.norm_eps, bias=config.norm_bias)
