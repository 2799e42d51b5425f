"""GGUF export: a tformer decoder (and its tokenizer) as a file llama.cpp runs.

The model goes the same way as a Hugging Face export -- `family_for_config` picks the family
and refuses a model whose settings config.json cannot express, `hf_tensors` names its weights
-- and `gguf_layout.py` then maps config.json keys and tensor names onto llama.cpp's, the same
table the importer reads with, so export followed by `tformer.load` is the identity (up to the
chosen quantisation); Llama 3's rope scaling becomes llama.cpp's `rope_freqs` tensor
(`gguf_rope.py`). Writing and quantising is the `gguf` package's `GGUFWriter` and
`gguf.quants.quantize`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tformer.errors import InputError
from tformer.models import TformerModel
from tformer.pretrained.config_map import family_for_config, hf_config_from_model
from tformer.pretrained.convert import hf_tensors
from tformer.pretrained.gguf_layout import (
    CONFIG_KEYS,
    FLOAT_KEYS,
    GGUF_ROPE_SCALINGS,
    ROPE_DIMENSIONS,
    ROPE_SCALING_FACTOR,
    ROPE_SCALING_TYPE,
    TOKEN_ROLES,
    WRITTEN,
    Architecture,
    architecture_for_model_type,
    gguf_name,
    gguf_package,
    permute_rope,
    rope_heads,
)
from tformer.pretrained.gguf_rope import ROPE_FREQS, rope_freqs
from tformer.pretrained.tokenizers import GGUFVocabulary, gguf_vocabulary
from tformer.tokenizer import Tokenizer

# --type -> (GGML type of 2-D weights, general.file_type); vectors (norms, biases) stay F32
# as llama.cpp's converter keeps them.
FILE_TYPES = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q4_1": ("Q4_1", "MOSTLY_Q4_1"),
}


Named = list[tuple[str, str, torch.Tensor]]  # (HF name, GGUF name, weight)


def save_gguf(
    model: TformerModel,
    path: str | Path,
    tokenizer: Tokenizer,
    *,
    file_type: str = "f16",
    name: str | None = None,
) -> Path:
    """Write `model` and `tokenizer` to `path` as a GGUF file of `file_type` (see FILE_TYPES).

    Atomic: the file is written beside `path` under a temporary name and renamed, so a
    failure leaves no half-written .gguf (and an existing file unchanged). `name` is
    general.name (default: the file name without .gguf).
    """
    if file_type not in FILE_TYPES:
        raise InputError(
            f"GGUF type {file_type!r} is not supported; supported: {', '.join(FILE_TYPES)}"
        )
    arch, hf_config, tensors = _exportable(model)
    vocabulary = gguf_vocabulary(tokenizer, hf_config["vocab_size"], tuple(TOKEN_ROLES))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name in the same directory (so the rename is atomic), created by the writer
    # with the usual permissions
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        _write(tmp, arch, hf_config, tensors, file_type, name or path.stem, vocabulary)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _exportable(model: TformerModel) -> tuple[Architecture, dict[str, Any], Named]:
    """The GGUF architecture, config.json and named weights of `model`, or an InputError
    saying why llama.cpp could not run it (checked before anything is written)."""
    family, hf_architecture = family_for_config(model.config)
    arch = architecture_for_model_type(family.model_types[0])
    if arch is None:
        raise InputError(
            f"GGUF export writes {', '.join(a.name for a in WRITTEN)} models; this "
            f"model is a {family.model_types[0]} model"
        )
    scaling = model.config.rope_scaling
    supported = (*GGUF_ROPE_SCALINGS, "llama3") if arch.rope_freqs else GGUF_ROPE_SCALINGS
    if scaling is not None and scaling not in supported:
        raise InputError(
            f"GGUF export of rope scaling {scaling!r} for llama.cpp's {arch.name!r} is not "
            f"supported; supported: {', '.join(supported)} (or none)"
        )
    hf_config = hf_config_from_model(model.config, family, hf_architecture)
    tensors = hf_tensors(model, family, family.base_prefix)
    names = _gguf_names(arch, list(tensors))
    return arch, hf_config, [(n, names[n], t) for n, t in tensors.items()]


def _write(
    tmp: Path,
    arch: Architecture,
    hf_config: dict[str, Any],
    tensors: Named,
    file_type: str,
    name: str,
    vocabulary: GGUFVocabulary,
) -> None:
    gguf = gguf_package()
    writer = gguf.GGUFWriter(str(tmp), arch.name)
    try:
        writer.add_name(name)
        writer.add_file_type(gguf.LlamaFileType[FILE_TYPES[file_type][1]])
        if file_type not in ("f32", "f16"):
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _write_config(writer, arch, hf_config)
        _write_vocabulary(writer, vocabulary)
        for hf_name, tensor_name, tensor in tensors:
            _add_tensor(writer, arch, hf_config, hf_name, tensor_name, tensor, file_type)
        if (hf_config.get("rope_scaling") or {}).get("rope_type") == "llama3":
            writer.add_tensor(ROPE_FREQS, rope_freqs(hf_config).numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _write_config(writer: Any, arch: Architecture, hf_config: dict[str, Any]) -> None:
    """The `<arch>.*` keys, each with the GGUF type llama.cpp reads it as."""
    for key, hf_key in CONFIG_KEYS.items():
        value = hf_config[hf_key]
        if key in FLOAT_KEYS:
            writer.add_float32(f"{arch.name}.{key}", float(value))
        else:
            writer.add_uint32(f"{arch.name}.{key}", int(value))
    writer.add_uint32(f"{arch.name}.{ROPE_DIMENSIONS}", int(hf_config["head_dim"]))
    scaling = hf_config.get("rope_scaling")
    if scaling is not None and scaling["rope_type"] in GGUF_ROPE_SCALINGS:
        writer.add_string(f"{arch.name}.{ROPE_SCALING_TYPE}", scaling["rope_type"])
        writer.add_float32(f"{arch.name}.{ROPE_SCALING_FACTOR}", float(scaling["factor"]))


def _write_vocabulary(writer: Any, vocabulary: GGUFVocabulary) -> None:
    writer.add_tokenizer_model(vocabulary.model)
    if vocabulary.pre is not None:
        writer.add_tokenizer_pre(vocabulary.pre)
    writer.add_token_list(list(vocabulary.tokens))
    writer.add_token_types(list(vocabulary.token_types))
    writer.add_token_merges(list(vocabulary.merges))
    for role, token_id in vocabulary.special_ids.items():
        writer.add_uint32(f"tokenizer.ggml.{TOKEN_ROLES[role]}", token_id)
    writer.add_add_bos_token(vocabulary.add_bos)
    writer.add_add_eos_token(vocabulary.add_eos)
    if vocabulary.chat_template is not None:
        writer.add_chat_template(vocabulary.chat_template)


def _tensor_names(gguf: Any, arch: Architecture) -> set[str]:
    """The tensor names (stems, "{bid}" for the block) llama.cpp loads for `arch`."""
    ids = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    return {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[ids[arch.name]]}


def _gguf_names(arch: Architecture, hf_names: list[str]) -> dict[str, str]:
    """HF name -> GGUF name of every tensor, or an InputError for one that llama.cpp's loader
    for `arch` would not read (it refuses a file with tensors it does not expect)."""
    known = _tensor_names(gguf_package(), arch)
    names = {}
    for hf_name in hf_names:
        name = gguf_name(hf_name, arch)
        stem = None if name is None else name.rsplit(".", 1)[0]
        if stem is None or _block_pattern(stem) not in known:
            raise InputError(
                f"tensor {hf_name!r} has no place in a llama.cpp {arch.name!r} model "
                f"(GGUF name {name!r})"
            )
        projection = stem.split(".")[-1]
        if name.endswith(".bias") and projection not in arch.biases:
            raise InputError(
                f"llama.cpp's {arch.name!r} models have no bias on {projection} (tformer's "
                f"{hf_name!r}); biases it reads: {', '.join(arch.biases) or 'none'}"
            )
        names[hf_name] = name
    return names


def _add_tensor(
    writer: Any,
    arch: Architecture,
    hf_config: dict[str, Any],
    hf_name: str,
    name: str,
    tensor: torch.Tensor,
    file_type: str,
) -> None:
    heads = rope_heads(hf_name, hf_config) if arch.interleaved_rope else None
    value = tensor.detach().to(torch.float32)
    value = value if heads is None else permute_rope(value, heads)
    data = value.cpu().numpy()
    gguf = gguf_package()
    kind = _tensor_type(gguf, data, file_type)
    if kind == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(name, data)
    elif kind == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, data.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)


def _block_pattern(stem: str) -> str:
    parts = stem.split(".")
    return ".".join(["blk", "{bid}", *parts[2:]]) if parts[0] == "blk" else stem


def _tensor_type(gguf: Any, data: np.ndarray, file_type: str) -> Any:
    """F32 for vectors; the file's type for matrices, F16 where a row does not fill whole
    quantisation blocks (as llama.cpp's converter falls back)."""
    types = gguf.GGMLQuantizationType
    if data.ndim < 2:
        return types.F32
    kind = types[FILE_TYPES[file_type][0]]
    block = gguf.GGML_QUANT_SIZES[kind][0]
    return kind if data.shape[-1] % block == 0 else types.F16
