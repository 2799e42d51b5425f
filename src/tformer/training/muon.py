"""Muon for the blocks' weight matrices, AdamW for every other parameter, as one optimizer.

Muon (Jordan et al., 2024; "Muon is Scalable for LLM Training", Liu et al., 2025) takes each
weight matrix's Nesterov momentum and replaces it by the nearest semi-orthogonal matrix,
approximated by five Newton-Schulz iterations: every direction of the update then moves at
the same rate, where Adam's steps are dominated by a few. On the character-level Tiny
Shakespeare model it reaches a given validation loss in about half the steps of AdamW at
the same learning rate (docs/performance.md, "Training to a target"). Embeddings, the output
head, norms and biases are not matrices acting on the residual stream, and stay with AdamW.

Why not `torch.optim.Muon`: it orthogonalises in bfloat16 always, which CPUs without native
bf16 (AVX2-only) emulate at under 1 GFLOP/s, and one matrix at a time, which for a small
model's 24 matrices is mostly dispatch. Here the iteration runs in `kernels.compute_dtype`
(bf16 only where native) and on all matrices of one shape at once (one batched product per
term); with bf16 it computes what `torch.optim.Muon` computes (tests/test_muon.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.adam import adam

from tformer.modules.block import TransformerBlock

MOMENTUM = 0.95  # Muon's Nesterov momentum (the reference implementations' value)
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # quintic, steepest at 0 (Jordan et al.)
NS_STEPS = 5
EPS = 1e-7


def orthogonalize(updates: Tensor, steps: int = NS_STEPS) -> Tensor:
    """Newton-Schulz iteration: (n, rows, cols) -> each matrix's U S' V^T for its SVD U S V^T,
    with S' about 0.7-1.2 where S spans two decades (values far below the largest grow less):
    not exactly U V^T, since the coefficients trade convergence for speed, which the papers
    found not to hurt training. Runs in `updates`' dtype."""
    a, b, c = NS_COEFFICIENTS
    tall = updates.shape[-2] > updates.shape[-1]
    x = updates.mT if tall else updates  # (n, short, long): the Gram matrix is the small side
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=EPS)  # spectral norm <= 1
    for _ in range(steps):
        gram = x @ x.mT  # (n, short, short)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


def block_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The trainable 2-D weights inside the model's transformer blocks (attention and
    feed-forward projections): what Muon updates."""
    return [
        p
        for module in model.modules()
        if isinstance(module, TransformerBlock)
        for p in module.parameters()
        if p.requires_grad and p.dim() == 2
    ]


class MuonAdamW(torch.optim.Optimizer):
    """Param groups with `muon=True` take Muon steps, the others AdamW steps; `lr` is shared.

    Muon's step is scaled by 0.2 * sqrt(max(rows, cols)), which gives it about the RMS of an
    AdamW step (Liu et al.), so one learning rate and schedule serve both kinds of group.
    """

    def __init__(
        self,
        groups: Iterable[dict[str, Any]],
        *,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        compute_dtype: torch.dtype,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": 0.0, "muon": False}
        super().__init__(list(groups), defaults)
        self.compute_dtype = compute_dtype

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon if group["muon"] else self._adamw)(group, params)

    def _muon(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, decay = group["lr"], group["weight_decay"]
        by_shape: dict[torch.Size, list[Tensor]] = defaultdict(list)
        for p in params:
            by_shape[p.shape].append(p)
        for shape, same in by_shape.items():
            updates = []
            for p in same:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                momentum = state["momentum_buffer"]
                momentum.lerp_(p.grad, 1 - MOMENTUM)
                updates.append(p.grad.lerp(momentum, MOMENTUM))  # Nesterov
            stacked = torch.stack(updates).to(self.compute_dtype)  # (n, rows, cols)
            orthogonal = orthogonalize(stacked)
            step_size = lr * 0.2 * math.sqrt(max(shape))
            for p, update in zip(same, orthogonal.unbind(0), strict=True):
                p.mul_(1 - lr * decay)
                p.add_(update.to(p.dtype), alpha=-step_size)

    def _adamw(self, group: dict[str, Any], params: list[Tensor]) -> None:
        for p in params:
            if not self.state[p]:
                self.state[p].update(
                    step=torch.zeros((), dtype=torch.float32),
                    exp_avg=torch.zeros_like(p),
                    exp_avg_sq=torch.zeros_like(p),
                )
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adam(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            decoupled_weight_decay=True,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )
