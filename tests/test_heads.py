"""Losses and pooling against hand-computed values."""

from __future__ import annotations

import math

import torch

from tformer.models.heads import mean_pool, token_cross_entropy


def test_token_loss_ignores_minus_100_positions() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, -5.0, 3.0]]])
    labels = torch.tensor([[0, 1, -100]])
    # -log softmax by hand: position 0 label 0, position 1 label 1; position 2 contributes nothing.
    nll0 = -(2.0 - math.log(math.exp(2.0) + 2))
    nll1 = -(1.0 - math.log(math.exp(1.0) + 2))
    expected = (nll0 + nll1) / 2
    assert math.isclose(token_cross_entropy(logits, labels).item(), expected, rel_tol=1e-6)


def test_label_smoothing_matches_the_smoothed_target_distribution() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    labels, eps = torch.tensor([1]), 0.1
    log_probs = torch.log_softmax(logits, -1)[0]
    # Szegedy et al.: target = (1 - eps) one-hot + eps / C uniform.
    target = torch.full((4,), eps / 4)
    target[1] += 1 - eps
    expected = -(target * log_probs).sum().item()
    actual = token_cross_entropy(logits, labels, label_smoothing=eps).item()
    assert math.isclose(actual, expected, rel_tol=1e-6)


def test_mean_pool_averages_only_real_tokens() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))
