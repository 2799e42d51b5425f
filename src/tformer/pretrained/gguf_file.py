"""GGUF files (llama.cpp's format): metadata, quantised tensors and the tokenizer, in one file.

A GGUF is turned into what a Hugging Face directory holds -- a config.json-style dict and
HF-named float tensors -- and then loaded through the same `model_from_hf` path, so the Llama
table in `families.py` is the only name map for both. Tensors are dequantised by the `gguf`
package (an optional dependency: `pip install tformer[gguf]`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tformer.checkpoint import CheckpointError
from tformer.errors import TformerError
from tformer.lazy_tensors import LazyTensors
from tformer.models import TformerModel
from tformer.pretrained.hf import model_from_hf
from tformer.pretrained.tokenizers import GGUFVocabulary, tokenizer_from_gguf
from tformer.tokenizer import Tokenizer

MODEL_TYPES = {"llama": "llama"}  # general.architecture -> Hugging Face model_type
CONFIG_KEYS = {  # "<architecture>.<key>" -> config.json key
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "context_length": "max_position_embeddings",
    "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}
TOKEN_ROLES = {  # special-token role -> tokenizer.ggml.<key>
    "bos": "bos_token_id",
    "eos": "eos_token_id",
    "unk": "unknown_token_id",
    "pad": "padding_token_id",
}
TENSOR_NAMES = (  # GGUF name -> Hugging Face Llama name; {i} is the block index
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("blk.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    ("blk.{i}.attn_q.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    ("blk.{i}.attn_k.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    ("blk.{i}.attn_v.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    ("blk.{i}.attn_output.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    ("blk.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    ("blk.{i}.ffn_gate.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    ("blk.{i}.ffn_up.weight", "model.layers.{i}.mlp.up_proj.weight"),
    ("blk.{i}.ffn_down.weight", "model.layers.{i}.mlp.down_proj.weight"),
)
DEQUANTISED = (  # tensor types `gguf` dequantises that tformer accepts
    *("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"),
    *("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"),
)


# Rows dequantised per `gguf` call. Its numpy dequantisers make several float32 temporaries
# of their input's size: for SmolLM2's (49152, 576) embedding in one call they added about
# 0.5 GB to the peak memory of loading; in blocks of rows they stay a few MB.
DEQUANTISE_ROWS = 2048


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("reading GGUF files needs the gguf package: pip install gguf") from error
    return gguf


def _read(path: Path) -> Any:
    """A `gguf.GGUFReader` over `path`; a file it cannot parse is a CheckpointError naming it.

    The reader maps every tensor when it opens the file, so a file cut short (an interrupted
    download or copy) fails there with a bare numpy error such as "cannot reshape array of
    size 375744 into shape (1536,360)". When that happens the tensors are mapped again one by
    one, by the reader itself, to name the first one whose bytes are missing.
    """

    class Reader(_gguf().GGUFReader):
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


def _hf_name(gguf_name: str, source: str) -> str:
    for theirs, ours in TENSOR_NAMES:
        match = re.fullmatch(re.escape(theirs).replace(r"\{i\}", r"(?P<i>\d+)"), gguf_name)
        if match:
            return ours.format(i=match.groupdict().get("i"))
    raise CheckpointError(f"{source}: GGUF tensor {gguf_name!r} has no place in a Llama model")


def unpermute_rope(weight: Tensor, n_heads: int) -> Tensor:
    """Undo llama.cpp's q/k row order (out, in) -> (out, in).

    llama.cpp rotates interleaved pairs (2j, 2j+1) of each head, Hugging Face and tformer rotate
    halves (j, j + head_dim/2), so its converter reorders each head's rows; this restores them.
    """
    rows, cols = weight.shape
    # (H, head_dim/2, 2, in) -> (H, 2, head_dim/2, in): pair member becomes the half
    return (
        weight.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)
    )


def _metadata(reader: Any) -> dict[str, Any]:
    return {name: field.contents() for name, field in reader.fields.items()}


def _hf_config(meta: dict[str, Any], has_output: bool, source: str) -> dict[str, Any]:
    arch = meta.get("general.architecture")
    if arch not in MODEL_TYPES:
        raise CheckpointError(
            f"{source}: GGUF architecture {arch!r} is not supported; supported: "
            f"{', '.join(MODEL_TYPES)}"
        )
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling != "none":
        raise CheckpointError(f"{source}: rope scaling {scaling!r} is not supported")
    hf = {v: meta[f"{arch}.{k}"] for k, v in CONFIG_KEYS.items() if f"{arch}.{k}" in meta}
    hf.setdefault("vocab_size", len(meta["tokenizer.ggml.tokens"]))
    head_dim = hf.get("head_dim", hf["hidden_size"] // hf["num_attention_heads"])
    if meta.get(f"{arch}.rope.dimension_count", head_dim) != head_dim:
        raise CheckpointError(f"{source}: partial rotary embeddings are not supported")
    for role, key in TOKEN_ROLES.items():
        if role != "unk" and f"tokenizer.ggml.{key}" in meta:
            hf[f"{role}_token_id"] = meta[f"tokenizer.ggml.{key}"]
    return {
        **hf,
        "model_type": MODEL_TYPES[arch],
        "architectures": ["LlamaForCausalLM"],
        "tie_word_embeddings": not has_output,
    }


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
    dequantize = _gguf().quants.dequantize
    for start in range(0, packed.shape[0], DEQUANTISE_ROWS):
        block = dequantize(packed[start : start + DEQUANTISE_ROWS], tensor.tensor_type)
        rows[start : start + DEQUANTISE_ROWS] = block.reshape(-1, rows.shape[1])
    return torch.from_numpy(out)


def _tokenizer(meta: dict[str, Any], source: str) -> Tokenizer:
    ids = {
        r: meta[f"tokenizer.ggml.{k}"]
        for r, k in TOKEN_ROLES.items()
        if f"tokenizer.ggml.{k}" in meta
    }
    model = meta.get("tokenizer.ggml.model", "<missing>")
    vocabulary = GGUFVocabulary(
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
    )
    try:
        return tokenizer_from_gguf(vocabulary)
    except TformerError as error:  # a vocabulary tformer cannot rebuild
        raise CheckpointError(f"{source}: {error}") from error


def load_gguf(
    path: str | Path, *, dtype: torch.dtype = torch.float32
) -> tuple[TformerModel, Tokenizer]:
    """The model (dequantised to `dtype`) and tokenizer of a Llama-architecture GGUF file."""
    source = str(path)
    reader = _read(Path(path))
    meta = _metadata(reader)
    hf_config = _hf_config(meta, any(t.name == "output.weight" for t in reader.tensors), source)
    tensors = _hf_tensors(reader.tensors, hf_config, source)
    return model_from_hf(hf_config, tensors, source, dtype), _tokenizer(meta, source)


def _hf_tensors(gguf_tensors: Any, hf_config: dict[str, Any], source: str) -> LazyTensors:
    """Every tensor under its Hugging Face name, dequantised (q/k rows back in HF order) only
    when looked up, so loading holds one dequantised tensor at a time."""
    n_heads = hf_config["num_attention_heads"]
    heads = {"q_proj": n_heads, "k_proj": hf_config.get("num_key_value_heads", n_heads)}

    def loader(tensor: Any, name: str) -> Callable[[], Tensor]:
        rope_heads = heads.get(name.split(".")[-2])

        def load() -> Tensor:
            value = _dequantise(tensor, source)
            return value if rope_heads is None else unpermute_rope(value, rope_heads)

        return load

    named = [(_hf_name(tensor.name, source), tensor) for tensor in gguf_tensors]
    return LazyTensors({name: loader(tensor, name) for name, tensor in named})
