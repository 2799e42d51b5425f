"""Muon for the blocks' matrices, AdamW for the rest: against torch.optim.Muon and
torch.optim.AdamW with the same parameters and gradients, and the Newton-Schulz iteration
against the singular value decomposition it approximates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tformer import ModelConfig, build_model
from tformer.errors import ConfigError
from tformer.training import TrainConfig
from tformer.training.muon import MuonAdamW, orthogonalize
from tformer.training.optim import build_optimizer


@pytest.mark.parametrize("shape", [(2, 24, 40), (2, 40, 24), (1, 32, 32)])
def test_orthogonalize_keeps_the_singular_vectors_and_pulls_the_singular_values_to_one(shape):
    torch.manual_seed(0)
    n, rows, cols = shape
    k = min(rows, cols)
    u = torch.linalg.qr(torch.randn(n, rows, k)).Q  # (n, rows, k)
    v = torch.linalg.qr(torch.randn(n, cols, k)).Q  # (n, cols, k)
    singular = torch.logspace(-1, 1, k).expand(n, k)  # spread over two decades
    update = u @ torch.diag_embed(singular) @ v.mT

    out = orthogonalize(update)

    # A polynomial in G G^T times G: same singular vectors, only the values change.
    core = u.mT @ out @ v  # (n, k, k), diagonal if the vectors are kept
    diagonal = torch.diagonal(core, dim1=-2, dim2=-1)
    off = core - torch.diag_embed(diagonal)
    assert off.abs().max() < 1e-4
    assert diagonal.min() > 0.6 and diagonal.max() < 1.2  # was 0.1 .. 10
    assert torch.allclose(
        torch.linalg.svdvals(out).sort(-1).values, diagonal.sort(-1).values, atol=1e-4
    )


def _parameters(seed: int) -> list[nn.Parameter]:
    torch.manual_seed(seed)
    return [
        nn.Parameter(torch.randn(48, 32)),
        nn.Parameter(torch.randn(48, 32)),
        nn.Parameter(torch.randn(32, 96)),
    ]


def _run(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], steps: int = 3) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()


def test_muon_groups_step_as_torch_optim_muon_does():
    ours, theirs = _parameters(0), _parameters(0)
    mine = MuonAdamW(
        [{"params": ours, "weight_decay": 0.1, "muon": True}],
        lr=0.02,
        betas=(0.9, 0.99),
        eps=1e-8,
        compute_dtype=torch.bfloat16,
    )
    reference = torch.optim.Muon(
        theirs,
        lr=0.02,
        weight_decay=0.1,
        momentum=0.95,
        nesterov=True,
        adjust_lr_fn="match_rms_adamw",
    )
    start = [p.detach().clone() for p in ours]
    _run(mine, ours)
    _run(reference, theirs)
    for a, b, p0 in zip(ours, theirs, start, strict=True):
        moved = (b - p0).abs().max()
        assert moved > 0.01  # the steps are not negligible...
        assert (a - b).abs().max() < 0.02 * moved  # ...and ours match to bf16 rounding


def test_adamw_groups_step_exactly_as_torch_optim_adamw_does():
    ours, theirs = _parameters(0), _parameters(0)
    mine = MuonAdamW(
        [{"params": ours[:2], "weight_decay": 0.1}, {"params": ours[2:], "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.9, 0.95),
        eps=1e-8,
        compute_dtype=torch.float32,
    )
    reference = torch.optim.AdamW(
        [{"params": theirs[:2], "weight_decay": 0.1}, {"params": theirs[2:], "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    _run(mine, ours)
    _run(reference, theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_muon_updates_the_blocks_matrices_and_adamw_the_embeddings_norms_and_head():
    model = build_model(ModelConfig.preset("tiny-decoder"))
    optimizer = build_optimizer(model, TrainConfig(optimizer="muon"))
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in optimizer.param_groups if g["muon"] for p in g["params"]}
    adamw = {names[id(p)] for g in optimizer.param_groups if not g["muon"] for p in g["params"]}
    assert muon and all(".blocks." in n and "norm" not in n for n in muon)
    assert any("embed" in n for n in adamw) and any("norm" in n for n in adamw)
    assert muon.isdisjoint(adamw)
    assert muon | adamw == set(names.values())


def test_muon_is_refused_with_sharded_matrices_and_unknown_optimizers_are_named():
    with pytest.raises(ConfigError, match="fsdp"):
        TrainConfig(optimizer="muon", distributed="fsdp")
    with pytest.raises(ConfigError, match="adamw, muon"):
        TrainConfig(optimizer="sgd")
