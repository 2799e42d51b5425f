"""Int8 weight-only quantisation against a float reference computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tformer import ModelConfig, build_model
from tformer.quantize import Int8Linear, quantize_int8


def test_each_weight_row_is_rounded_to_the_nearest_step_of_its_absmax_scale() -> None:
    linear = nn.Linear(16, 8)
    q = Int8Linear(linear)
    scale = linear.weight.detach().abs().amax(dim=1) / 127  # absmax maps to +-127
    assert q.weight.dtype == torch.int8 and q.weight.abs().max() == 127
    dequantised = q.weight.float() * scale[:, None]
    error = (dequantised - linear.weight.detach()).abs()
    assert torch.all(error <= scale[:, None] / 2 + 1e-7)  # round-to-nearest


def test_int8_linear_matches_a_float_matmul_with_the_dequantised_weights() -> None:
    linear = nn.Linear(64, 32)
    q = Int8Linear(linear)
    x = torch.randn(3, 5, 64)
    reference = x @ (q.weight.float() * q.scale.float()[:, None]).T + linear.bias.detach()
    out = q(x)
    assert out.shape == (3, 5, 32) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.02)  # bf16 activations


def test_quantized_model_keeps_its_predictions() -> None:
    model = build_model(ModelConfig.preset("llama-mini", n_layers=2)).eval()
    ids = torch.randint(3, 1000, (2, 12))
    with torch.no_grad():
        reference = model(ids).logits
        quantised = quantize_int8(model)(ids).logits.float()
    kept = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert kept == ["decoder.blocks.0.ffn.down", "decoder.blocks.1.ffn.down"]  # the default keep
    relative = (quantised - reference).norm() / reference.norm()
    assert relative < 0.05
    agree = (quantised.argmax(-1) == reference.argmax(-1)).float().mean()
    assert agree > 0.9


def test_only_cpu_models_can_be_quantized() -> None:
    model = build_model(ModelConfig.preset("tiny-decoder")).to("meta")
    with pytest.raises(ValueError, match="uses a CPU kernel; move the model to cpu"):
        quantize_int8(model)
