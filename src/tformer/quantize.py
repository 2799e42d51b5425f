"""Weight-only quantisation (int8, int4): faster decoding on the CPU.

Decoding one token multiplies a handful of activation rows by every weight matrix, so its
speed is set by how many bytes of weights are read per token, not by arithmetic. Two layouts,
each multiplied by a PyTorch CPU kernel that takes the activations and the packed weights
directly (no dequantised copy is ever made). Activations, scales and the layers left
unquantised are bfloat16 (`kernels.weight_only_dtype`), on every CPU: the kernels have vector
code for bfloat16 activations only, also where bfloat16 matmuls are emulated (AVX2).

* int8 (`quantize_int8`): one scale per output row (symmetric, absmax), a quarter of the
  float32 bytes; kernel `torch._weight_int8pack_mm`.
* int4 (`quantize_int4`): groups of `group_size` consecutive input weights of a row share a
  scale and an offset (asymmetric min-max, the layout of GGUF's Q4_1), about a sixth of the
  float32 bytes; kernel `torch._weight_int4pack_mm_for_cpu`. Re-quantising weights that were
  dequantised from a Q4_1 GGUF file with group 32 finds the file's own 4-bit grid again
  (each block's minimum and maximum sit on it), so such a model loses nothing but the
  rounding of scales and offsets to the compute dtype.

Measured on SmolLM2-135M (speed, and held-out perplexity against float32 as the quality
check): see docs/performance.md. The kernels are tuned for few rows (decoding); long prompts
run slower than unquantised ones. A quantised model is inference-only: it cannot be trained or
saved with `save_pretrained`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tformer import kernels
from tformer.errors import CheckpointError, InputError

INT8_MAX = 127
INT4_LEVELS = 15  # 4-bit codes 0..15
INT4_GROUP_SIZES = (32, 64, 128, 256)  # what the CPU kernel accepts
INT4_ROW_MULTIPLE = 16  # the CPU packing needs out_features divisible by this


class WeightOnlyLinear(nn.Module):
    """What the int8 and int4 layers share: y = x W^T + b in the compute dtype, by the
    layer's packed kernel or, for products of many rows, by a dense copy of the same
    quantised weights (`many_rows`, see `kernels.dense_copy`): the copy holds the values the
    kernel multiplies by, so the choice changes only rounding, never the weights. The copy
    keeps its own dtype (float32 where bf16 is emulated): `to_weight_only_dtype` converts a
    quantised model's other tensors only."""

    in_features: int
    bias: Tensor | None
    dense: Tensor | None
    BUFFERS: tuple[str, ...] = ("bias", "dense")  # optional ones: None unless asked for
    compute_dtype = kernels.weight_only_dtype()  # activations, scales, bias

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("bias", _bias(linear, self.compute_dtype))
        self.dense_from_rows: int | None = None

    def keep_dense_copy(self, weights: Callable[[], Tensor], many_rows: bool) -> None:
        """Keep the dequantised weights (out, in), `weights()`, in this CPU's dense dtype
        (`kernels.dense_copy`) if many-row products are asked for."""
        copy = kernels.dense_copy("cpu") if many_rows else None
        self.dense_from_rows = None if copy is None else copy.min_rows
        self.register_buffer("dense", None if copy is None else weights().to(copy.dtype))

    def forward(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., out), computed and returned in the compute dtype."""
        rows = x.reshape(-1, self.in_features).to(self.compute_dtype)  # (N, in)
        many = self.dense_from_rows is not None and rows.shape[0] >= self.dense_from_rows
        if many and self.dense is not None:
            out = (rows.to(self.dense.dtype) @ self.dense.T).to(self.compute_dtype)
        else:
            out = self.packed(rows)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], out.shape[-1])  # (N, out) -> (..., out)

    def packed(self, rows: Tensor) -> Tensor:
        """rows (N, in) -> (N, out) by the layer's quantised kernel."""
        raise NotImplementedError


class Int8Linear(WeightOnlyLinear):
    """y = x W^T + b with W stored as int8 rows times a per-row scale (symmetric, absmax)."""

    BUFFERS = ("weight", "scale", *WeightOnlyLinear.BUFFERS)

    def __init__(self, linear: nn.Linear, *, many_rows: bool = False) -> None:
        super().__init__(linear)
        weight = linear.weight.detach().float()  # (out, in)
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / INT8_MAX  # (out,)
        quantised = (weight / scale[:, None]).round().clamp(-INT8_MAX, INT8_MAX)
        self.register_buffer("weight", quantised.to(torch.int8))
        self.register_buffer("scale", scale.to(self.compute_dtype))
        self.keep_dense_copy(lambda: quantised * self.scale.float()[:, None], many_rows)

    def packed(self, rows: Tensor) -> Tensor:
        return torch._weight_int8pack_mm(rows, self.weight, self.scale)


@dataclass(frozen=True)
class Int4Blocks:
    """A weight (out, in) as 4-bit codes q in groups along the input dimension, one scale and
    minimum per group: w = q * scale + minimum. The layout of GGUF's Q4_1 blocks (Q4_0's too,
    with minimum = -8 * scale), so a file's blocks become a layer without a float round trip."""

    codes: Tensor  # (out, in) integers 0..15
    scale: Tensor  # (out, in / group_size) float32
    minimum: Tensor  # (out, in / group_size) float32

    @property
    def group_size(self) -> int:
        return self.codes.shape[1] // self.scale.shape[1]


def min_max_blocks(weight: Tensor, group_size: int) -> Int4Blocks:
    """Min-max quantisation of `weight` (out, in) per group of `group_size` inputs: scale =
    (max - min) / 15, so each group's minimum and maximum are exact."""
    out_features, in_features = weight.shape
    groups = weight.detach().float().view(out_features, -1, group_size)  # (out, G, g)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # (out, G)
    scale = ((high - low) / INT4_LEVELS).clamp(min=1e-12)
    codes = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, INT4_LEVELS)
    return Int4Blocks(codes.to(torch.uint8).view(out_features, in_features), scale, low)


class Int4Linear(WeightOnlyLinear):
    """y = x W^T + b with W stored as 4-bit codes q in groups along the input dimension:
    w = (q - 8) * scale + zero, one (scale, zero) per group of `group_size` weights of a row.

    The codes come from `blocks` when given (a GGUF file's own, see `Int4Blocks`), else from
    min-max quantisation of the layer's weight (`min_max_blocks`); `zero` absorbs the
    kernel's fixed offset of 8.
    """

    BUFFERS = ("weight", "scales_and_zeros", *WeightOnlyLinear.BUFFERS)

    def __init__(
        self,
        linear: nn.Linear,
        group_size: int = 32,
        *,
        many_rows: bool = False,
        blocks: Int4Blocks | None = None,
    ) -> None:
        super().__init__(linear)
        if not int4_supported(linear, group_size):
            raise InputError(
                f"int4 needs in_features divisible by group_size={group_size} (one of "
                f"{INT4_GROUP_SIZES}) and out_features divisible by {INT4_ROW_MULTIPLE}; got "
                f"{linear.in_features} -> {linear.out_features}"
            )
        blocks = min_max_blocks(linear.weight, group_size) if blocks is None else blocks
        if blocks.codes.shape != linear.weight.shape or blocks.group_size != group_size:
            raise ValueError(
                f"blocks of shape {tuple(blocks.codes.shape)} in groups of {blocks.group_size} "
                f"do not fit a {tuple(linear.weight.shape)} layer with groups of {group_size}"
            )
        out_features, in_features = linear.weight.shape
        self.group_size = group_size
        codes = blocks.codes.to(torch.int32)
        self.register_buffer("weight", torch._convert_weight_to_int4pack_for_cpu(codes, 1))
        zero = blocks.minimum + 8 * blocks.scale
        # (G, out, 2): the kernel's layout of scales and zeros
        stacked = torch.stack((blocks.scale.T, zero.T), dim=-1).to(self.compute_dtype)
        self.register_buffer("scales_and_zeros", stacked)

        def dequantised() -> Tensor:  # what the kernel multiplies by: scales as stored
            stored_scale, stored_zero = (t.T[..., None] for t in stacked.float().unbind(-1))
            grouped = codes.view(out_features, -1, group_size).float()  # (out, G, g)
            return ((grouped - 8) * stored_scale + stored_zero).view(out_features, in_features)

        self.keep_dense_copy(dequantised, many_rows)

    def packed(self, rows: Tensor) -> Tensor:
        return torch._weight_int4pack_mm_for_cpu(
            rows, self.weight, self.group_size, self.scales_and_zeros
        )


def int4_supported(linear: nn.Linear, group_size: int) -> bool:
    """Whether the CPU int4 kernel can hold this layer's weight."""
    return (
        group_size in INT4_GROUP_SIZES
        and linear.in_features % group_size == 0
        and linear.out_features % INT4_ROW_MULTIPLE == 0
    )


OUTPUT_PROJECTION = "lm_head.proj"  # the vocabulary projection of both LM families


def quantize_int8(
    model: nn.Module, *, keep: tuple[str, ...] = ("ffn.down",), many_rows: bool = False
) -> nn.Module:
    """Replace the nn.Linear layers of `model` (in place) by Int8Linear, except those whose
    name ends with one of `keep`; everything else (kept layers, embeddings, norms) takes the
    dtype of weight-only models (`kernels.weight_only_dtype`). Returns the model, in eval
    mode. CPU only.

    The feed-forward down projections are kept by default: their inputs (the activated hidden
    units) have the largest outliers, and on SmolLM2-135M quantising them too moved held-out
    perplexity by +1.2% against float32, over our 1% budget; without them it is +0.7%.
    `many_rows`: the layers will multiply many rows at once (a batched server, long prompts)
    and keep a dense copy of their quantised weights for that (`kernels.dense_copy`: bf16,
    or float32 where bf16 is emulated; its bytes per weight on top).
    """

    def make(name: str, linear: nn.Linear) -> nn.Module | None:
        return None if name.endswith(keep) else Int8Linear(linear, many_rows=many_rows)

    return _replace_linears(model, make)


def quantize_int4(
    model: nn.Module,
    *,
    group_size: int = 32,
    keep: tuple[str, ...] = (),
    many_rows: bool = False,
    blocks: Mapping[str, Callable[[], Int4Blocks]] | None = None,
) -> nn.Module:
    """Replace the nn.Linear layers of `model` (in place) by Int4Linear with groups of
    `group_size` (those `int4_layers` names), the output projection by Int8Linear, and leave
    the rest (`keep`, shapes the kernel cannot take) in `kernels.weight_only_dtype`, like
    everything else. Returns the model, in eval mode.

    Why the output projection gets 8 bits: its rows are the logits, and 4-bit ones moved
    SmolLM2-135M's held-out perplexity by +3.9% against float32 (8 bits: within 1%). GGUF's
    4-bit files make the same choice (SmolLM2's Q4_1 file stores token embeddings as Q8_0).
    `many_rows` as in `quantize_int8`. `blocks`: for some of the int4 layers, by name, the
    4-bit blocks to store instead of quantising the layer's weight (a GGUF file's own; the
    weight of such a layer is never read, so it may be left on the meta device).
    """
    four_bit = set(int4_layers(model, group_size=group_size, keep=keep))
    given = blocks or {}

    def make(name: str, linear: nn.Linear) -> nn.Module | None:
        if name in four_bit:
            found = given[name]() if name in given else None
            return Int4Linear(linear, group_size, many_rows=many_rows, blocks=found)
        if name.endswith(OUTPUT_PROJECTION) and not name.endswith(keep):
            return Int8Linear(linear, many_rows=many_rows)
        return None

    return _replace_linears(model, make)


def int4_layers(model: nn.Module, *, group_size: int = 32, keep: tuple[str, ...] = ()) -> list[str]:
    """The names of the nn.Linear layers `quantize_int4` stores in 4 bits."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and not name.endswith((*keep, OUTPUT_PROJECTION))
        and int4_supported(module, group_size)
    ]


QUANTIZERS: dict[str, Callable[..., nn.Module]] = {  # (model, *, many_rows=False) -> model
    "int8": quantize_int8,
    "int4": quantize_int4,
}


def _replace_linears(
    model: nn.Module, make: Callable[[str, nn.Linear], nn.Module | None]
) -> nn.Module:
    """Swap each nn.Linear for `make(name, linear)` unless that is None; the rest -> the
    compute dtype. Weights still on the meta device are allowed: `quantize_int4` builds such
    layers from blocks given for them and never reads the weight."""
    if any(p.device.type not in ("cpu", "meta") for p in model.parameters()):
        raise InputError("weight-only quantisation uses CPU kernels; move the model to cpu")
    model.eval()
    # Names, not modules: each float32 layer is freed as soon as it is replaced, so converting
    # never holds the whole float32 model and its quantised copy at once.
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name in names:
        replacement = make(name, model.get_submodule(name))
        if replacement is not None:
            parent_name, _, child_name = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child_name, replacement)
    return to_weight_only_dtype(model)


def to_weight_only_dtype(model: nn.Module) -> nn.Module:
    """Convert the floating-point tensors of `model` (in place) to `kernels.weight_only_dtype`,
    except the weight-only layers' own: those are made in the dtypes their kernels and dense
    copies take, which `model.to(dtype)` would overwrite. Tied parameters stay tied (their
    data is replaced, not the parameter)."""
    dtype = kernels.weight_only_dtype()
    for module in model.modules():
        if isinstance(module, WeightOnlyLinear):
            continue
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(dtype)
    return model


QUANTISED_LAYERS: dict[str, type[WeightOnlyLinear]] = {
    "Int8Linear": Int8Linear,
    "Int4Linear": Int4Linear,
}
LAYOUT_ATTRIBUTES = ("in_features", "out_features", "dense_from_rows", "group_size")


def quantised_layout(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Every weight-only layer of `model` by name: its class and the attributes that, with
    its buffers, make it (what `restore_quantised` needs; JSON values)."""
    return {
        name: {
            "kind": type(module).__name__,
            **{a: getattr(module, a) for a in LAYOUT_ATTRIBUTES if hasattr(module, a)},
        }
        for name, module in model.named_modules()
        if isinstance(module, WeightOnlyLinear)
    }


def restore_quantised(
    model: nn.Module, layout: Mapping[str, Mapping[str, Any]], state: Mapping[str, Tensor]
) -> None:
    """Put the layers `quantised_layout` described back into `model` (in place), each made of
    its buffers in `state` (by state-dict name) as they are: nothing is quantised or packed
    again, so tensors memory-mapped from a file stay mapped. The layers' own constructors
    would quantise; this is the other way in, for weights prepared before."""
    for name, record in layout.items():
        kind = QUANTISED_LAYERS[record["kind"]]
        required = [b for b in kind.BUFFERS if b not in WeightOnlyLinear.BUFFERS]
        if any(f"{name}.{b}" not in state for b in required):
            raise CheckpointError(f"the prepared weights of {name} lack one of {required}")
        layer = kind.__new__(kind)
        nn.Module.__init__(layer)
        for attribute in LAYOUT_ATTRIBUTES:
            if attribute in record:
                setattr(layer, attribute, record[attribute])
        for buffer in kind.BUFFERS:
            layer.register_buffer(buffer, state.get(f"{name}.{buffer}"))
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)


def _bias(linear: nn.Linear, dtype: torch.dtype) -> Tensor | None:
    return None if linear.bias is None else linear.bias.detach().to(dtype)
