"""An int4 load of a GGUF file keeps the file's own Q4_0/Q4_1 blocks: every 4-bit layer
multiplies by the weights `gguf` dequantises (up to bf16 scales), with no float32 copy made.

The file is the small Llama of test_pretrained_gguf (q and up projections Q4_0, k and gate
Q4_1, q/k rows permuted as llama.cpp stores them). The references are `gguf`'s own
dequantiser and the old path (dequantise to float32, then min-max `quantize_int4`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

gguf = pytest.importorskip("gguf")
pytest.importorskip("transformers")

from test_pretrained_gguf import _llama, _write_gguf  # noqa: E402
from tformer.pretrained.gguf_file import load_gguf  # noqa: E402
from tformer.pretrained.gguf_layout import unpermute_rope  # noqa: E402
from tformer.quantize import Int4Linear, quantize_int4  # noqa: E402

LAYERS = {  # tformer layer of block 0 -> (GGUF tensor, its type, heads of a permuted q/k)
    "decoder.blocks.0.self_attn.q_proj": ("blk.0.attn_q.weight", "Q4_0", 4),
    "decoder.blocks.0.self_attn.k_proj": ("blk.0.attn_k.weight", "Q4_1", 2),
    "decoder.blocks.0.ffn.gate": ("blk.0.ffn_gate.weight", "Q4_1", None),
    "decoder.blocks.0.ffn.up": ("blk.0.ffn_up.weight", "Q4_0", None),
}


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    file = tmp_path_factory.mktemp("blocks") / "tiny.gguf"
    _write_gguf(file, _llama())
    return file


def _dequantised(path: Path, name: str, heads: int | None) -> torch.Tensor:
    """`gguf`'s dequantisation of tensor `name`, q/k rows in Hugging Face's order."""
    tensor = next(t for t in gguf.GGUFReader(str(path)).tensors if t.name == name)
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    weight = torch.from_numpy(values.reshape(-1, values.shape[-1]).copy())
    return weight if heads is None else unpermute_rope(weight, heads)


def _kernel_weights(layer: Int4Linear) -> torch.Tensor:
    """What the layer's kernel multiplies by, read back through an identity input: (out, in)."""
    return layer(torch.eye(layer.in_features)).float().T


def _step(weight: torch.Tensor) -> torch.Tensor:
    """Each weight's group step (max - min) / 15, broadcast to (out, in): the grid spacing."""
    groups = weight.view(weight.shape[0], -1, 32)
    step = (groups.amax(-1, keepdim=True) - groups.amin(-1, keepdim=True)) / 15
    return step.expand_as(groups).reshape(weight.shape)


@torch.no_grad()
def test_each_4_bit_layer_multiplies_by_the_files_own_weights(path: Path) -> None:
    model, _ = load_gguf(path, quantize="int4")
    for layer_name, (tensor_name, _, heads) in LAYERS.items():
        layer = model.get_submodule(layer_name)
        assert isinstance(layer, Int4Linear) and layer.group_size == 32
        expected = _dequantised(path, tensor_name, heads)
        got = _kernel_weights(layer)
        # Only the bf16 rounding of scales, minima and the read-back product: far below a step.
        assert torch.all((got - expected).abs() <= _step(expected) / 8), layer_name


@torch.no_grad()
def test_q4_1_layers_equal_requantising_and_q4_0_layers_keep_the_files_grid(path: Path) -> None:
    """Min-max re-quantisation of a dequantised Q4_1 block finds its codes again (each block's
    minimum and maximum are codes 0 and 15), so both paths store identical bytes. A Q4_0
    block is symmetric around code 8 and rarely reaches both ends: re-quantising put it on a
    new grid, rounding every weight once more; the direct path keeps the file's values."""
    direct, _ = load_gguf(path, quantize="int4")
    requantised = quantize_int4(load_gguf(path)[0])
    for layer_name, (tensor_name, kind, heads) in LAYERS.items():
        ours, old = direct.get_submodule(layer_name), requantised.get_submodule(layer_name)
        if kind == "Q4_1":
            assert torch.equal(ours.weight, old.weight), layer_name
            assert torch.equal(ours.scales_and_zeros, old.scales_and_zeros), layer_name
            continue
        expected = _dequantised(path, tensor_name, heads)
        ours_error = (_kernel_weights(ours) - expected).abs().mean()
        old_error = (_kernel_weights(old) - expected).abs().mean()
        assert ours_error < old_error / 4, layer_name
    ids = torch.randint(0, 64, (2, 7))
    logits = direct(ids).logits
    assert logits.dtype == requantised(ids).logits.dtype and torch.isfinite(logits).all()


def test_an_int4_load_never_dequantises_a_4_bit_tensor(path: Path, monkeypatch) -> None:
    from tformer.pretrained import gguf_file

    dequantised: list[str] = []
    real = gguf_file._dequantise

    def counting(tensor, source):
        dequantised.append(tensor.tensor_type.name)
        return real(tensor, source)

    monkeypatch.setattr(gguf_file, "_dequantise", counting)
    load_gguf(path, quantize="int4")
    assert dequantised and not {"Q4_0", "Q4_1"} & set(dequantised)
