"""The model's Linear: the split float32 path equals the plain product, and is used only for
few-row CPU inference with more than one thread, on CPUs where it was measured faster."""

from __future__ import annotations

import time

import pytest
import torch

from tformer import kernels
from tformer.modules import linear as linear_module
from tformer.modules.linear import Linear, split_linear


@pytest.mark.parametrize("parts", [2, 4])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 24), (8, 1, 24), (3, 24)])
def test_split_product_equals_the_plain_product(parts: int, bias: bool, shape: tuple) -> None:
    layer = torch.nn.Linear(24, 16, bias=bias)
    x = torch.randn(*shape)
    reference = (x.double() @ layer.weight.double().T).float()
    if bias:
        reference = reference + layer.bias.detach()
    with torch.no_grad():
        out = split_linear(x, layer.weight, layer.bias, parts)
    assert out.shape == (*shape[:-1], 16)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("measured_faster", [True, False])
def test_split_path_only_for_few_row_float32_inference_where_it_is_faster(
    torch_threads, monkeypatch, measured_faster: bool
) -> None:
    torch_threads(2)
    monkeypatch.setattr(kernels, "split_measured_fast", lambda split, parts: measured_faster)
    calls: list[int] = []
    real = linear_module.split_linear

    def spy(x, weight, bias, parts):
        calls.append(parts)
        return real(x, weight, bias, parts)

    monkeypatch.setattr(linear_module, "split_linear", spy)
    layer = Linear(24, 16)
    with torch.no_grad():
        layer(torch.randn(1, 1, 24))  # decoding one token: split over 2 threads
        layer(torch.randn(4, 64, 24))  # a prompt: plain
        layer.to(torch.bfloat16)(torch.randn(1, 24, dtype=torch.bfloat16))  # bf16: plain
    layer.float()
    out = layer(torch.randn(1, 24))  # gradients recorded: plain
    out.sum().backward()
    assert calls == ([2] if measured_faster else []) and layer.weight.grad is not None


@pytest.mark.parametrize("slowed", ["linear", "bmm"])
def test_the_split_is_measured_faster_exactly_when_the_plain_product_is_slower(
    monkeypatch, slowed: str
) -> None:
    def slow(real):
        def wrapper(*args, **kwargs):
            time.sleep(2e-4)
            return real(*args, **kwargs)

        return wrapper

    if slowed == "linear":
        monkeypatch.setattr(torch.nn.functional, "linear", slow(torch.nn.functional.linear))
    else:
        monkeypatch.setattr(torch, "bmm", slow(torch.bmm))
    kernels.split_measured_fast.cache_clear()
    try:
        assert kernels.split_measured_fast(split_linear, 2, shape=(64, 32)) is (slowed == "linear")
    finally:
        kernels.split_measured_fast.cache_clear()


def test_state_dict_is_that_of_nn_linear() -> None:
    plain = torch.nn.Linear(8, 4)
    ours = Linear(8, 4)
    ours.load_state_dict(plain.state_dict())
    assert ours.state_dict().keys() == plain.state_dict().keys()
