"""Weight-only quantisation (int8, int4) against float references computed by hand."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from tformer import ModelConfig, build_model, kernels
from tformer.quantize import Int4Linear, Int8Linear, quantize_int4, quantize_int8


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
    assert out.shape == (3, 5, 32) and out.dtype == kernels.weight_only_dtype()
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
@pytest.mark.parametrize("quantize", [quantize_int8, quantize_int4])
def test_only_cpu_models_can_be_quantized(quantize) -> None:
    model = build_model(ModelConfig.preset("tiny-decoder")).to("cuda")
    with pytest.raises(ValueError, match="uses CPU kernels; move the model to cpu"):
        quantize(model)


def min_max_groups(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference 4-bit min-max quantisation, written from the definition with numpy:
    returns the dequantised weights and each weight's step (the group's scale)."""
    w = weight.detach().double().numpy().reshape(weight.shape[0], -1, group)
    low, high = w.min(axis=-1, keepdims=True), w.max(axis=-1, keepdims=True)
    step = (high - low) / 15
    codes = np.clip(np.round((w - low) / step), 0, 15)
    shape = weight.shape
    return (
        torch.from_numpy((codes * step + low).reshape(shape)).float(),
        torch.from_numpy(np.broadcast_to(step, w.shape).reshape(shape)).float(),
    )


def int4_weights(layer: Int4Linear) -> torch.Tensor:
    """The weights the kernel multiplies by, read back through an identity input: (out, in)."""
    identity = torch.eye(layer.in_features)
    return layer(identity).float().T


def test_int4_weights_are_the_min_max_grid_of_each_group_of_32() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(128, 48, bias=False)
    expected, step = min_max_groups(linear.weight, 32)
    got = int4_weights(Int4Linear(linear, group_size=32))
    # The grid is the reference's up to bf16 rounding of scales and offsets: far below a step.
    assert torch.all((got - expected).abs() <= step / 8)
    assert torch.all((got - linear.weight.detach()).abs() <= step * (0.5 + 1 / 8))


def test_int4_linear_matches_a_float_matmul_with_the_reference_weights() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    expected, _ = min_max_groups(linear.weight, 32)
    x = torch.randn(3, 5, 64)
    out = Int4Linear(linear, group_size=32)(x)
    assert out.shape == (3, 5, 32) and out.dtype == kernels.weight_only_dtype()
    reference = x @ expected.T + linear.bias.detach()
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.02)  # bf16 activations


def test_int4_requantising_gguf_q4_1_weights_finds_their_grid_again() -> None:
    gguf = pytest.importorskip("gguf")
    torch.manual_seed(0)
    weight = torch.randn(32, 96).numpy()
    kind = gguf.GGMLQuantizationType.Q4_1
    q4_1 = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(weight, kind), kind))
    linear = nn.Linear(96, 32, bias=False)
    linear.weight.data = q4_1.float()
    _, step = min_max_groups(linear.weight, 32)
    got = int4_weights(Int4Linear(linear, group_size=32))
    assert torch.all((got - q4_1).abs() <= step / 8)  # only bf16 rounding, no new rounding


def test_int4_rejects_shapes_the_kernel_cannot_hold() -> None:
    with pytest.raises(ValueError, match="out_features divisible by 16"):
        Int4Linear(nn.Linear(64, 10), group_size=32)
    with pytest.raises(ValueError, match="in_features divisible by group_size=32"):
        Int4Linear(nn.Linear(48, 16), group_size=32)


def test_int4_model_equals_the_float_model_with_reference_quantised_weights() -> None:
    """Blocks on the 4-bit grid of each group of 32, the output projection on the int8 grid of
    each row: the quantised model computes the same logits, up to bf16 activations."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("llama-mini", n_layers=2)).eval()
    reference = copy.deepcopy(model)
    for name, linear in reference.named_modules():
        if not isinstance(linear, nn.Linear):
            continue
        if name == "lm_head.proj":  # tied to the embeddings, which stay unquantised
            weight = linear.weight.detach()
            scale = weight.abs().amax(dim=1, keepdim=True) / 127
            linear.weight = nn.Parameter((weight / scale).round() * scale)
        else:
            linear.weight.data = min_max_groups(linear.weight, 32)[0]
    ids = torch.randint(3, 1000, (2, 12))
    with torch.no_grad():
        expected = reference(ids).logits
        quantised = quantize_int4(model)(ids).logits.float()
    kinds = {name: type(m).__name__ for name, m in model.named_modules()}
    assert kinds["lm_head.proj"] == "Int8Linear"
    assert kinds["decoder.blocks.1.ffn.down"] == "Int4Linear"
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    relative = (quantised - expected).norm() / expected.norm()
    assert relative < 0.03  # bf16 activations; the 4-bit rounding itself moved logits by ~17%


def test_each_float_layer_is_freed_once_replaced() -> None:
    """Converting never holds the whole float model and its quantised copy at once: when a
    layer is converted, every layer replaced before it has been freed (SmolLM2-135M: the peak
    memory of int4 conversion went from +489 MiB above loading to +0)."""
    import weakref

    from tformer.quantize import _replace_linears

    model = build_model(ModelConfig.preset("llama-mini", n_layers=2, tie_embeddings=False))
    replaced: list[weakref.ref] = []

    def make(name: str, linear: nn.Linear) -> nn.Module:
        assert all(ref() is None for ref in replaced), f"a replaced layer is alive at {name}"
        replaced.append(weakref.ref(linear))
        return Int8Linear(linear)

    _replace_linears(model, make)
    assert len(replaced) > 10 and all(ref() is None for ref in replaced)


DENSE_COPIES = [kernels.DenseCopy(8, torch.bfloat16), kernels.DenseCopy(32, torch.float32)]


@pytest.mark.parametrize("dense", DENSE_COPIES, ids=["bf16-native", "bf16-emulated"])
@pytest.mark.parametrize("layer", [Int8Linear, Int4Linear])
def test_many_rows_copy_holds_the_kernels_own_weights(layer, dense, monkeypatch) -> None:
    """The dense copy a batched server multiplies many rows by is the quantised weight the
    kernel uses: the kernel applied to the identity gives W^T, which must equal the copy.
    Both CPU classes' copies (bf16 where it is native, float32 where it is emulated)."""
    monkeypatch.setattr(kernels, "dense_copy", lambda device: dense)
    linear = nn.Linear(64, 32)
    q = layer(linear, many_rows=True)
    assert q.dense.dtype == dense.dtype and q.dense_from_rows == dense.min_rows
    with torch.no_grad():
        kernel_weights = q.packed(torch.eye(64, dtype=q.compute_dtype)).T  # (out, in)
        torch.testing.assert_close(q.dense.float(), kernel_weights.float(), atol=0, rtol=1e-2)
        x = torch.randn(dense.min_rows, 64)
        reference = x @ q.dense.float().T + linear.bias.detach()
        out = q(x)
        assert out.dtype == q.compute_dtype
        torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.02)
        assert layer(linear).dense is None  # only when asked for


@pytest.mark.parametrize("dense", DENSE_COPIES, ids=["bf16-native", "bf16-emulated"])
def test_a_many_rows_model_keeps_its_copies_dtype_and_the_kernels_results(
    dense, monkeypatch
) -> None:
    """Converting the rest of a quantised model to the weight-only dtype leaves the dense
    copies in theirs, keeps tied weights tied, and a prompt long enough for the copies gives
    the logits the kernels give (the same quantised weights, other rounding)."""
    monkeypatch.setattr(kernels, "dense_copy", lambda device: dense)
    model = build_model(ModelConfig.preset("llama-mini", n_layers=2, tie_embeddings=True))
    kernel_only = quantize_int4(copy.deepcopy(model), keep=("lm_head.proj",))
    many = quantize_int4(copy.deepcopy(model), keep=("lm_head.proj",), many_rows=True)
    layers = [m for m in many.modules() if isinstance(m, (Int4Linear, Int8Linear))]
    assert layers and all(m.dense is not None and m.dense.dtype == dense.dtype for m in layers)
    assert all(m.scales_and_zeros.dtype == kernels.weight_only_dtype() for m in layers)
    assert all(p.dtype == kernels.weight_only_dtype() for p in many.parameters())
    assert many.lm_head.proj.weight is many.decoder.embeddings.tokens.weight  # kept: still tied
    ids = torch.randint(3, 1000, (1, dense.min_rows))
    with torch.no_grad():
        expected, got = kernel_only(ids).logits.float(), many(ids).logits.float()
    torch.testing.assert_close(got, expected, atol=0.05 * expected.abs().max().item(), rtol=0)
