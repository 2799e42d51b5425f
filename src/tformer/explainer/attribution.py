"""Token attributions: which input tokens a prediction depends on.

Two complementary estimates:

* gradient x input (Shrikumar et al., 2016; Denil et al., 2014): the dot product of each token
  embedding with the gradient of the prediction's score with respect to it -- a first-order
  estimate of how much the score would change if that token were removed. Signed.
* attention rollout (Abnar & Zuidema, 2020): attention maps averaged over heads, mixed with the
  identity for the residual connection, and multiplied through the layers -- how much of each
  input token's information reaches a position if attention were the only mixing. Non-negative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from tformer.models.stack import TransformerStack


def gradient_x_input(model: nn.Module, score: Callable[[], Tensor]) -> dict[str, Tensor]:
    """Per-token gradient x input of the scalar `score()` for every stack's input tokens.

    `score` runs the model and returns a scalar. The token embeddings are made leaves of the
    graph by a temporary hook (so frozen weights need no gradient, and trainable ones get none).
    Returns stack name -> (T,) scores for batch row 0.
    """
    leaves: dict[str, Tensor] = {}
    current: list[str] = []
    handles = []
    for name, stack in model.named_modules():
        if isinstance(stack, TransformerStack):
            handles.append(
                stack.embeddings.register_forward_pre_hook(
                    lambda module, args, name=name: current.append(name)
                )
            )
            handles.append(
                stack.embeddings.tokens.register_forward_hook(_make_leaf(leaves, current))
            )
    try:
        with torch.enable_grad():
            value = score()
            # autograd.grad, not backward(): the model's parameters get no .grad as a side effect
            grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    return {
        name: (grad * leaf).sum(-1)[0].detach()
        for (name, leaf), grad in zip(leaves.items(), grads, strict=True)
        if grad is not None
    }


def _make_leaf(leaves: dict[str, Tensor], current: list[str]) -> Callable[..., Tensor]:
    def hook(module: nn.Module, args: object, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_()  # (B, T, d_model)
        leaves[current[-1]] = leaf
        return leaf

    return hook


def attention_rollout(attentions: Sequence[Tensor]) -> Tensor:
    """Rollout of per-layer self-attention weights, each (H, T, T), first layer first -> (T, T).

    Row i says how much of each input position flows into position i after the last layer.
    The residual connection is modelled as 0.5 * attention + 0.5 * identity (the paper's choice).
    """
    length = attentions[0].shape[-1]
    eye = torch.eye(length, dtype=torch.float32, device=attentions[0].device)
    rollout = eye
    for weights in attentions:
        mixed = 0.5 * weights.float().mean(dim=0) + 0.5 * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed @ rollout
    return rollout


def cross_rollout(
    encoder_attentions: Sequence[Tensor], cross_attentions: Sequence[Tensor], rows: Tensor
) -> Tensor:
    """Source-token relevance for decoder positions `rows` of an encoder-decoder: the decoder's
    cross-attention (averaged over heads and layers, (T, S)) composed with the encoder's
    rollout (S, S). Returns (S,), summing to 1."""
    cross = torch.stack([w.float().mean(dim=0) for w in cross_attentions]).mean(dim=0)  # (T, S)
    relevance = cross[rows].mean(dim=0) @ attention_rollout(encoder_attentions)
    return relevance / relevance.sum()
