"""Activation checkpointing: the same loss and gradients as without it (dropout included),
far fewer activations kept for backward, and nothing else about the model changes."""

from __future__ import annotations

import copy

import pytest
import torch

from tformer import ModelConfig, build_model
from tformer.training.recompute import checkpoint_activations

PRESETS = ["tiny-decoder", "tiny-encoder", "tiny-seq2seq"]


def _model(preset: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig.preset(preset, dropout=0.1, n_layers=3)).train()


def _loss(model: torch.nn.Module, seed: int = 1) -> torch.Tensor:
    """A training loss on a fixed batch; `seed` fixes the dropout masks."""
    ids = torch.randint(3, 60, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = torch.randint(3, 60, (2, 12), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(seed)
    if model.config.arch == "encoder-decoder":
        return model(ids, ids, labels=labels).loss
    return model(ids, labels=labels).loss


@pytest.mark.parametrize("preset", PRESETS)
def test_checkpointed_gradients_equal_the_plain_ones(preset: str) -> None:
    plain = _model(preset)
    recomputed = copy.deepcopy(plain)
    assert checkpoint_activations(recomputed) == len(
        [m for m in recomputed.modules() if type(m).__name__.endswith("Block")]
    )
    loss, loss_recomputed = _loss(plain), _loss(recomputed)
    loss.backward()
    loss_recomputed.backward()
    assert torch.equal(loss, loss_recomputed)
    for (name, a), b in zip(plain.named_parameters(), recomputed.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-7, msg=name)


def _saved_bytes(model: torch.nn.Module) -> int:
    """Bytes of the tensors autograd keeps for backward during one forward pass."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _loss(model)
    return total


def test_checkpointing_keeps_a_fraction_of_the_activations() -> None:
    plain = _model("tiny-decoder")
    recomputed = copy.deepcopy(plain)
    checkpoint_activations(recomputed)
    assert _saved_bytes(recomputed) < 0.5 * _saved_bytes(plain)


def test_the_model_is_otherwise_unchanged() -> None:
    """Same state dict keys, and applying it twice wraps nothing twice."""
    model = _model("tiny-decoder")
    keys = list(model.state_dict())
    checkpoint_activations(model)
    checkpoint_activations(model)
    assert list(model.state_dict()) == keys
    with torch.no_grad():  # inference runs each block once, as before
        model.eval()(torch.randint(3, 60, (1, 5)))
    block = model.decoder.blocks[0]
    assert block.forward.args[0].__self__ is block  # one wrapper around the block's own forward


def test_checkpointing_composes_with_lora_adapters() -> None:
    """Adapters' hooks run again in the recomputation: their gradients are unchanged, and the
    frozen base still gets none."""
    from tformer.adapters import LoraConfig, add_lora

    plain = _model("tiny-decoder")
    add_lora(plain, LoraConfig(targets="all-linear", rank=4, alpha=8.0))
    for name, p in plain.named_parameters():
        if name.endswith(".B"):
            torch.nn.init.normal_(p)  # B starts at zero: give A a gradient to compare too
    recomputed = copy.deepcopy(plain)
    checkpoint_activations(recomputed)
    _loss(plain).backward()
    _loss(recomputed).backward()
    for (name, a), b in zip(plain.named_parameters(), recomputed.parameters(), strict=True):
        if a.requires_grad:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-7, msg=name)
        else:
            assert a.grad is None and b.grad is None
