"""GGUF files (llama.cpp's format): metadata, quantised tensors and the tokenizer, in one file.

A GGUF is turned into what a Hugging Face directory holds -- a config.json-style dict and
HF-named float tensors -- and then loaded through the same `model_from_hf` path, so the
records in `families/` map both onto tformer; `gguf_layout.py` holds the GGUF <-> HF names
(shared with `gguf_export.py`). Tensors are dequantised by the `gguf` package (an optional
dependency: `pip install tformer[gguf]`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tformer.checkpoint import CheckpointError
from tformer.errors import TformerError
from tformer.lazy_tensors import LazyTensors
from tformer.models import TformerModel
from tformer.pretrained.convert import locate
from tformer.pretrained.families import Family, family_for
from tformer.pretrained.gguf_blocks import FOUR_BIT, int4_blocks
from tformer.pretrained.gguf_layout import (
    ARCHITECTURES,
    GGUF_ROPE_SCALINGS,
    IMPORTED_KEYS,
    ROPE_DIMENSIONS,
    ROPE_SCALING_FACTOR,
    ROPE_SCALING_TYPE,
    TOKEN_ROLES,
    Architecture,
    architecture,
    gguf_package,
    hf_name,
    per_head_qkv,
    rope_heads,
    unpermute_rope,
)
from tformer.pretrained.gguf_rope import ROPE_FREQS, llama3_from_rope_freqs
from tformer.pretrained.hf import empty_hf_model, fill_hf_model, hf_prefix, model_from_hf
from tformer.pretrained.tokenizers import GGUFVocabulary, tokenizer_from_gguf
from tformer.quantize import QUANTIZERS, Int4Blocks, int4_layers, quantize_int4
from tformer.tokenizer import Tokenizer

DEQUANTISED = (  # tensor types `gguf` dequantises that tformer accepts
    *("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"),
    *("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"),
)


# Rows dequantised per `gguf` call. Its numpy dequantisers make several float32 temporaries
# of their input's size: for SmolLM2's (49152, 576) embedding in one call they added about
# 0.5 GB to the peak memory of loading; in blocks of rows they stay a few MB.
DEQUANTISE_ROWS = 2048


def _read(path: Path) -> Any:
    """A `gguf.GGUFReader` over `path`; a file it cannot parse is a CheckpointError naming it.

    The reader maps every tensor when it opens the file, so a file cut short (an interrupted
    download or copy) fails there with a bare numpy error such as "cannot reshape array of
    size 375744 into shape (1536,360)". When that happens the tensors are mapped again one by
    one, by the reader itself, to name the first one whose bytes are missing.
    """

    class Reader(gguf_package().GGUFReader):
        def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
            try:
                super()._build_tensors(start_offs, fields)
            except ValueError as error:
                for field in fields:
                    try:
                        super()._build_tensors(start_offs, [field])
                    except ValueError:
                        raise CheckpointError(
                            f"{path} is truncated or corrupted: the data of tensor "
                            f"{field.name!r} is incomplete ({error}); download or copy it again"
                        ) from error
                raise

    try:
        return Reader(str(path))
    except CheckpointError:
        raise
    except (ValueError, KeyError, IndexError) as error:  # `gguf`'s errors for a bad header
        raise CheckpointError(
            f"{path} is truncated or corrupted: not a readable GGUF file ({error!r})"
        ) from error


def _metadata(reader: Any) -> dict[str, Any]:
    return {name: field.contents() for name, field in reader.fields.items()}


def _architecture(meta: dict[str, Any], source: str) -> Architecture:
    arch = architecture(meta.get("general.architecture", "<missing>"))
    if arch is None:
        raise CheckpointError(
            f"{source}: GGUF architecture {meta.get('general.architecture')!r} is not "
            f"supported; supported: {', '.join(a.name for a in ARCHITECTURES)}"
        )
    return arch


def _hf_config(
    meta: dict[str, Any], tensor_names: set[str], rope_divisors: Tensor | None, source: str
) -> dict[str, Any]:
    """config.json for the file: the architecture's keys, the special tokens' ids, and what
    only a decoder or only an encoder has (`_decoder_config`, `_encoder_config`)."""
    arch = _architecture(meta, source)
    # decoders also read the keys only import needs (Phi-3's window, GPT-NeoX's norm eps and
    # residual layout)
    keys = arch.config_keys if arch.encoder else {**arch.config_keys, **IMPORTED_KEYS}
    hf = {v: meta[f"{arch.name}.{k}"] for k, v in keys.items() if f"{arch.name}.{k}" in meta}
    hf.setdefault("vocab_size", len(meta["tokenizer.ggml.tokens"]))
    for role, key in TOKEN_ROLES.items():
        if role != "unk" and f"tokenizer.ggml.{key}" in meta:
            hf[f"{role}_token_id"] = meta[f"tokenizer.ggml.{key}"]
    if arch.encoder:
        hf.update(_encoder_config(meta, arch, source))
    else:
        hf.update(_decoder_config(meta, arch, hf, tensor_names, rope_divisors, source))
    return {**hf, "model_type": arch.model_type, "architectures": [arch.hf_class]}


def _decoder_config(
    meta: dict[str, Any],
    arch: Architecture,
    hf: dict[str, Any],
    tensor_names: set[str],
    rope_divisors: Tensor | None,
    source: str,
) -> dict[str, Any]:
    """Rotary settings, and what GGUF says only by a tensor's presence: an output matrix,
    Llama's optional attention and MLP biases (in `tensor_names`), Llama 3's rope scaling
    (the `rope_freqs` tensor's values, `rope_divisors`)."""
    name = arch.name
    head_dim = hf.get("head_dim", hf["hidden_size"] // hf["num_attention_heads"])
    rotated = meta.get(f"{name}.{ROPE_DIMENSIONS}", head_dim)
    extra: dict[str, Any] = {
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "attention_bias": "blk.0.attn_output.bias" in tensor_names,
        "mlp_bias": "blk.0.ffn_up.bias" in tensor_names,
    }
    if arch.large_model_blocks is not None:
        large = hf["num_hidden_layers"] == arch.large_model_blocks
        extra["query_pre_attn_scalar"] = (
            hf["hidden_size"] // hf["num_attention_heads"] if large else head_dim
        )
    if rotated != head_dim:
        if "rotary_fraction" not in dict(family_for(arch.model_type).config_keys):
            raise CheckpointError(
                f"{source}: partial rotary embeddings ({rotated} of {head_dim} features per "
                f"head) are not supported for GGUF architecture {name!r}"
            )
        extra["partial_rotary_factor"] = rotated / head_dim
    scaling = meta.get(f"{name}.{ROPE_SCALING_TYPE}", "none")
    if scaling in GGUF_ROPE_SCALINGS:
        extra["rope_scaling"] = {
            "rope_type": scaling,
            "factor": meta[f"{name}.{ROPE_SCALING_FACTOR}"],
        }
    elif scaling != "none":
        raise CheckpointError(
            f"{source}: rope scaling {scaling!r} is not supported; supported: "
            f"{', '.join(GGUF_ROPE_SCALINGS)}"
        )
    llama3 = None if rope_divisors is None else llama3_from_rope_freqs(rope_divisors, hf, source)
    if llama3 is not None:
        if "rope_scaling" in extra:
            raise CheckpointError(
                f"{source}: both {scaling!r} rope scaling and a Llama 3 {ROPE_FREQS} tensor; "
                "tformer applies one scaling"
            )
        extra["rope_scaling"] = llama3
    return extra


def _encoder_config(meta: dict[str, Any], arch: Architecture, source: str) -> dict[str, Any]:
    """An embedding encoder's settings: bidirectional attention and mean pooling (what
    tformer's embedding head computes) are required, not assumed."""
    if meta.get(f"{arch.name}.attention.causal", False):
        raise CheckpointError(f"{source}: a causal {arch.name!r} encoder is not supported")
    mean = gguf_package().PoolingType.MEAN
    pooling = meta.get(f"{arch.name}.pooling_type", mean)
    if pooling != mean:
        raise CheckpointError(
            f"{source}: {arch.name}.pooling_type={pooling} is not supported; tformer's "
            f"embedding head pools by the mean ({int(mean)})"
        )
    if "tokenizer.ggml.token_type_count" not in meta:
        return {}
    return {"type_vocab_size": meta["tokenizer.ggml.token_type_count"]}


def _dequantise(tensor: Any, source: str) -> Tensor:
    kind = tensor.tensor_type.name
    if kind not in DEQUANTISED:
        raise CheckpointError(
            f"{source}: tensor {tensor.name!r} (shape {tuple(reversed(tensor.shape.tolist()))}) "
            f"is stored as {kind}, which tformer cannot dequantise; supported: "
            f"{', '.join(DEQUANTISED)}"
        )
    shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # GGUF lists dims fastest-first
    out = np.empty(shape, dtype=np.float32)
    packed = tensor.data  # (rows, bytes of a row) for quantised types; rows match `shape[0]`
    packed = packed if packed.ndim > 1 else packed[None]  # a vector (norm weights): one row
    rows = out.reshape(packed.shape[0], -1)  # a view of `out`
    dequantize = gguf_package().quants.dequantize
    for start in range(0, packed.shape[0], DEQUANTISE_ROWS):
        block = dequantize(packed[start : start + DEQUANTISE_ROWS], tensor.tensor_type)
        rows[start : start + DEQUANTISE_ROWS] = block.reshape(-1, rows.shape[1])
    return torch.from_numpy(out)


def _vocabulary(meta: dict[str, Any]) -> GGUFVocabulary:
    ids = {
        r: meta[f"tokenizer.ggml.{k}"]
        for r, k in TOKEN_ROLES.items()
        if f"tokenizer.ggml.{k}" in meta
    }
    model = meta.get("tokenizer.ggml.model", "<missing>")
    return GGUFVocabulary(
        model=model,
        tokens=meta["tokenizer.ggml.tokens"],
        token_types=meta.get("tokenizer.ggml.token_type", ()),
        merges=meta.get("tokenizer.ggml.merges", ()),
        scores=meta.get("tokenizer.ggml.scores", ()),
        special_ids=ids,
        chat_template=meta.get("tokenizer.chat_template"),
        # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise
        add_bos=meta.get("tokenizer.ggml.add_bos_token", model == "llama"),
        add_space_prefix=meta.get("tokenizer.ggml.add_space_prefix", True),
        pre=meta.get("tokenizer.ggml.pre") if model == "gpt2" else None,  # byte-level only
    )


def _tokenizer(meta: dict[str, Any], source: str) -> Tokenizer:
    try:
        return tokenizer_from_gguf(_vocabulary(meta))
    except TformerError as error:  # a vocabulary tformer cannot rebuild
        raise CheckpointError(f"{source}: {error}") from error


def load_gguf(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    quantize: str | None = None,
    many_rows: bool = False,
) -> tuple[TformerModel, Tokenizer]:
    """The model and tokenizer of a GGUF file (see ARCHITECTURES): dequantised to `dtype`, or
    with weight-only quantised linear layers (`quantize`: "int8" or "int4", `many_rows` as in
    `quantize.quantize_int8`). With "int4", layers stored as Q4_0/Q4_1 keep the file's own
    blocks (`gguf_blocks`) and are never dequantised."""
    source = str(path)
    reader = _read(Path(path))
    meta = _metadata(reader)
    arch = _architecture(meta, source)
    rope = next((t for t in reader.tensors if arch.rope_freqs and t.name == ROPE_FREQS), None)
    weights = [t for t in reader.tensors if t is not rope]
    divisors = None if rope is None else _dequantise(rope, source)
    hf_config = _hf_config(meta, {t.name for t in weights}, divisors, source)
    tensors = _hf_tensors(weights, hf_config, arch, source)
    if quantize is None:
        model = model_from_hf(hf_config, tensors, source, dtype)
    else:
        model, family = empty_hf_model(hf_config, tensors, source)
        blocks = (
            _file_blocks(model, family, weights, hf_config, arch, tensors)
            if quantize == "int4"
            else {}
        )
        unread = {f"{name}.weight" for name in blocks}
        fill_hf_model(model, family, tensors, source, torch.float32, unread=unread)
        if quantize == "int4":
            model = quantize_int4(model, many_rows=many_rows, blocks=blocks)
        else:
            model = QUANTIZERS[quantize](model, many_rows=many_rows)
    return model, _tokenizer(meta, source)


def _file_blocks(
    model: TformerModel,
    family: Family,
    gguf_tensors: Any,
    hf_config: dict[str, Any],
    arch: Architecture,
    tensors: LazyTensors,
) -> dict[str, Callable[[], Int4Blocks]]:
    """For each layer `quantize_int4` stores in 4 bits whose weight the file holds as 4-bit
    blocks (in the layer's own layout: no transform, no fused q/k/v), a loader of them."""
    stored = {hf_name(t.name, arch): t for t in gguf_tensors}
    prefix = hf_prefix(family, tensors)
    found: dict[str, Callable[[], Int4Blocks]] = {}
    for name in int4_layers(model):
        mapped = locate(f"{name}.weight", family, prefix, model.config)
        if mapped is None or mapped.transform or mapped.split is not None:
            continue
        tensor = stored.get(mapped.hf_name)
        if tensor is not None and tensor.tensor_type.name in FOUR_BIT:
            heads = rope_heads(mapped.hf_name, hf_config) if arch.interleaved_rope else None
            found[name] = partial(_blocks_in_hf_order, tensor, heads)
    return found


def _blocks_in_hf_order(tensor: Any, heads: int | None) -> Int4Blocks:
    """The tensor's blocks, q/k rows back in Hugging Face's order where llama.cpp permuted
    them (a permutation of rows moves codes, scales and minima alike)."""
    blocks = int4_blocks(tensor)
    assert blocks is not None  # `_file_blocks` chose Q4_0/Q4_1 tensors only
    if heads is None:
        return blocks
    codes, scale, minimum = (
        unpermute_rope(t, heads) for t in (blocks.codes, blocks.scale, blocks.minimum)
    )
    return Int4Blocks(codes, scale, minimum)


def load_gguf_tokenizer(path: str | Path) -> Tokenizer:
    """Only the tokenizer of a GGUF file: its metadata, without dequantising any tensor."""
    return _tokenizer(_metadata(_read(Path(path))), str(path))


def load_gguf_vocabulary(path: str | Path) -> GGUFVocabulary:
    """The tokenizer metadata of a GGUF file as it is stored, before a Tokenizer is built."""
    return _vocabulary(_metadata(_read(Path(path))))


def _hf_name(gguf_name: str, arch: Architecture, source: str) -> str:
    name = hf_name(gguf_name, arch)
    if name is None:
        raise CheckpointError(f"{source}: GGUF tensor {gguf_name!r} has no place in the model")
    return name


def _hf_tensors(
    gguf_tensors: Any, hf_config: dict[str, Any], arch: Architecture, source: str
) -> LazyTensors:
    """Every tensor under its Hugging Face name, dequantised (q/k rows back in HF order where
    llama.cpp permuted or regrouped them, Gemma's norm weights without the 1 llama.cpp adds)
    only when looked up, so loading holds one at a time."""

    def loader(tensor: Any, name: str) -> Callable[[], Tensor]:
        heads = rope_heads(name, hf_config) if arch.interleaved_rope else None
        regrouped = arch.qkv_per_head and ".query_key_value." in name
        offset = arch.norm_offset if name.endswith("norm.weight") else 0.0

        def load() -> Tensor:
            value = _dequantise(tensor, source)
            if offset:
                return value - offset
            if regrouped:
                return per_head_qkv(value, hf_config["num_attention_heads"])
            return value if heads is None else unpermute_rope(value, heads)

        return load

    named = [(_hf_name(tensor.name, arch, source), tensor) for tensor in gguf_tensors]
    return LazyTensors({name: loader(tensor, name) for name, tensor in named})
