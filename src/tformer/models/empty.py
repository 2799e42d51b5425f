"""Models built without values, for loaders that overwrite every tensor.

`build_model` initialises every weight at random (nn.Linear's own init, then `init_weights`).
A loader then overwrites all of it: for SmolLM2-135M that was seconds of start-up and 540 MB
of float32 weights that a quantised model never uses. `empty_model` builds on the meta device
instead (shapes and dtypes, no memory). The loader replaces what it wants to (quantised
layers built from a file's own blocks, see `quantize.quantize_int4`), `materialise`s what is
left, and then fills it: loading checks that every tensor it materialised is in the file, so
no uninitialised value is ever computed with.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from tformer.config import ModelConfig
from tformer.models import TformerModel, build_model


def empty_model(config: ModelConfig) -> TformerModel:
    """The model of `config` on the meta device: no memory, no initialisation."""
    with torch.device("meta"):
        return build_model(config)


def materialise(model: nn.Module, dtype: torch.dtype, *, unread: Collection[str] = ()) -> None:
    """Give every parameter and buffer of `model` still on the meta device, except those
    named in `unread`, uninitialised CPU memory (floating-point ones in `dtype`), keeping
    tied parameters tied. (The tables derived from the config, which no file stores -- rotary
    frequencies, sinusoids -- are made on the CPU at once, see `modules.position`.)"""
    made: dict[int, nn.Parameter] = {}  # id of a meta parameter -> its replacement (ties)
    for prefix, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if param.is_meta and _joined(prefix, name) not in unread:
                if id(param) not in made:
                    made[id(param)] = nn.Parameter(_empty(param, dtype), param.requires_grad)
                setattr(module, name, made[id(param)])
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.is_meta and _joined(prefix, name) not in unread:
                module._buffers[name] = _empty(buffer, dtype)


def _joined(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _empty(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(
        tensor.shape, dtype=dtype if tensor.is_floating_point() else tensor.dtype, device="cpu"
    )
