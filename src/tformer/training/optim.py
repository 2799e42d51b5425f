"""The optimizers (AdamW; Muon for the blocks' matrices with AdamW for the rest), weight decay
on matrices only, and the learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from tformer import kernels
from tformer.training.config import TrainConfig
from tformer.training.muon import MuonAdamW, block_matrices


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """`config.optimizer`: AdamW, or Muon for the blocks' matrices and AdamW for the rest
    (`muon.py`). Weight decay on 2-D weights (matrices, embeddings) but not on biases or norm
    gains, as in GPT-2/nanoGPT. AdamW alone uses the fused kernel where the device has one."""
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = {"lr": config.lr, "betas": (config.beta1, config.beta2), "eps": config.eps}
    orthogonal = block_matrices(model) if config.optimizer == "muon" else []
    taken = {id(p) for p in orthogonal}
    rest = [p for p in params if id(p) not in taken]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
    ]
    if orthogonal:
        muon = {"params": orthogonal, "weight_decay": config.weight_decay, "muon": True}
        dtype = kernels.compute_dtype(orthogonal[0].device)
        return MuonAdamW([muon, *groups], compute_dtype=dtype, **kwargs)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # no fused kernel for this device/dtype
        return torch.optim.AdamW(groups, **kwargs)


def lr_multiplier(config: TrainConfig, d_model: int) -> Callable[[int], float]:
    """step -> factor applied to `config.lr` (LambdaLR's convention); step counts from 0."""
    warmup = config.warmup_steps
    if config.schedule == "noam":
        # Vaswani et al. 5.3: d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), step from 1.
        return lambda step: d_model**-0.5 * min((step + 1) ** -0.5, (step + 1) * warmup**-1.5)
    min_ratio = (config.min_lr if config.min_lr is not None else config.lr / 10) / config.lr

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, config.max_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return cosine


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, d_model: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(config, d_model))
