"""Prepared weights: a quantised model as its kernels take it, written once, mapped after.

Packing 4-bit codes into the int4 kernel's layout costs seconds for SmolLM2-135M, and
reading a GGUF file's metadata (its 49,152-token vocabulary) seconds more and ~170 MB of
Python objects. The result does not change while the file does not, so the first start
writes it (see `cache.py`, which keys and invalidates the entries) and later starts map it:
no value is computed, and pages are read from disk only when a product first needs them.

An entry is a directory: config.json (the ModelConfig), layout.json (the weight-only layers,
`quantize.quantised_layout`), weights.pt (every tensor of the quantised model, in the dtypes
and layouts the kernels take) and the tokenizer. The tensors are in torch's own file format,
read with `torch.load(mmap=True, weights_only=True)`, because it places every tensor at a
multiple of 64 bytes: the int8 kernel's vector loads need that (on a safetensors file, whose
tensors are 8-byte aligned, it crashed). The packed layout depends on the torch build and the
CPU (`prepared_variant`), which is why this is a cache and not a file format.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tformer import kernels
from tformer.checkpoint import (
    CheckpointError,
    atomic_directory,
    read_config,
    unique_state_dict,
    write_config,
)
from tformer.models import TformerModel
from tformer.models.empty import empty_model
from tformer.quantize import quantised_layout, restore_quantised, to_weight_only_dtype
from tformer.tokenizer import TOKENIZER_FILE, Tokenizer

LAYOUT_FILE = "layout.json"
TENSORS_FILE = "weights.pt"


def prepared_variant(quantize: str, many_rows: bool) -> str:
    """What prepared weights depend on besides the source file: the scheme, the dense copies
    for many rows and their dtype (`kernels.dense_copy`), the weight-only dtype
    (`kernels.weight_only_dtype`), and the torch build and CPU class that set the int4
    kernel's packed layout (its blocks follow the CPU's vector width)."""
    capability = torch.backends.cpu.get_cpu_capability()
    dtype = kernels.weight_only_dtype()
    dense = kernels.dense_copy("cpu").dtype if many_rows else None
    return f"{quantize}|dense={dense}|{dtype}|torch {torch.__version__}|{capability}"


def save_prepared(directory: Path, model: TformerModel, tokenizer: Tokenizer | None) -> None:
    """Write the quantised `model` (and tokenizer) as an entry, atomically."""
    with atomic_directory(directory) as tmp:
        write_config(model.config, tmp)
        torch.save(unique_state_dict(model), tmp / TENSORS_FILE)
        (tmp / LAYOUT_FILE).write_text(json.dumps(quantised_layout(model), indent=1) + "\n")
        if tokenizer is not None:
            tokenizer.save(tmp)


def open_prepared(directory: Path) -> tuple[TformerModel, Tokenizer | None]:
    """The quantised model of an entry, its tensors memory-mapped from the file, and its
    tokenizer; a damaged or incomplete entry is a CheckpointError."""
    try:
        layout = json.loads((directory / LAYOUT_FILE).read_text())
        # memory-mapped: pages are read when a product first needs them
        state = torch.load(directory / TENSORS_FILE, mmap=True, weights_only=True)
    except (OSError, RuntimeError, ValueError) as error:  # torch's errors for a damaged file
        raise CheckpointError(f"{directory} is not a complete prepared entry: {error}") from error
    model = empty_model(read_config(directory))
    restore_quantised(model, layout, state)
    restored = {f"{name}.{b}" for name in layout for b in model.get_submodule(name)._buffers}
    rest = {name: tensor for name, tensor in state.items() if name not in restored}
    missing, unexpected = model.load_state_dict(rest, strict=False, assign=True)
    left = [name for name, t in model.state_dict().items() if t.is_meta]
    if left or unexpected or any(name not in restored for name in missing):
        raise CheckpointError(
            f"{directory} does not fit its config: empty {left[:4]}, unexpected {unexpected[:4]}"
        )
    model = to_weight_only_dtype(model)  # the tables derived from the config
    has_tokenizer = (directory / TOKENIZER_FILE).is_file()
    return model.eval(), Tokenizer.load(directory) if has_tokenizer else None
