"""How llama.cpp lays a model out in a GGUF file, as data shared by import and export.

Both directions go through Hugging Face names and config.json keys (`families/` then maps
those onto tformer), so these tables are the only GGUF <-> HF map: `gguf_file.py` reads with
them, `gguf_export.py` writes with them. Names follow llama.cpp's converter
(`convert_hf_to_gguf.py`) and the `gguf` package's constants (`gguf.TENSOR_NAMES`,
`gguf.Keys`); `tests/test_gguf_export.py` checks that they agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from tformer.pretrained.convert import fuse_rows, split_rows


def gguf_package() -> Any:
    """The `gguf` package, imported only when a GGUF file is read or written (optional)."""
    try:
        import gguf
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("GGUF files need the gguf package: pip install gguf") from error
    return gguf


CONFIG_KEYS = {  # the decoders' "<architecture>.<key>" -> config.json key
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "attention.value_length": "head_dim",
    "context_length": "max_position_embeddings",
    "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}
FLOAT_KEYS = ("rope.freq_base", "attention.layer_norm_rms_epsilon")  # the rest are uint32
ROPE_DIMENSIONS = "rope.dimension_count"  # rotated features per head; tformer rotates all
ROPE_SCALING_TYPE, ROPE_SCALING_FACTOR = "rope.scaling.type", "rope.scaling.factor"
GGUF_ROPE_SCALINGS = ("linear",)  # the ones written as rope.scaling.* keys ("llama3": a tensor)
# keys only import reads ("<architecture>.<key>" -> config.json key): Phi-3's window (which
# llama.cpp's converter writes), GPT-NeoX's LayerNorm eps and residual layout
IMPORTED_KEYS = {
    "attention.sliding_window": "sliding_window",
    "attention.layer_norm_epsilon": "layer_norm_eps",
    "use_parallel_residual": "use_parallel_residual",
    "attn_logit_softcapping": "attn_logit_softcapping",  # Gemma 2's caps
    "final_logit_softcapping": "final_logit_softcapping",
}

TOKEN_ROLES = {  # special-token role -> tokenizer.ggml.<key>
    "bos": "bos_token_id",
    "eos": "eos_token_id",
    "unk": "unknown_token_id",
    "pad": "padding_token_id",
    "sep": "seperator_token_id",  # BERT's [SEP] (sic: llama.cpp's spelling); [CLS] is bos
    "mask": "mask_token_id",
}

# The decoders' tensors (llama, qwen2, qwen3): GGUF name -> Hugging Face name, before
# ".weight"/".bias"; {i}: block index
TENSOR_NAMES = (
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
    ("blk.{i}.attn_norm", "model.layers.{i}.input_layernorm"),
    ("blk.{i}.attn_q", "model.layers.{i}.self_attn.q_proj"),
    ("blk.{i}.attn_k", "model.layers.{i}.self_attn.k_proj"),
    ("blk.{i}.attn_v", "model.layers.{i}.self_attn.v_proj"),
    ("blk.{i}.attn_output", "model.layers.{i}.self_attn.o_proj"),
    ("blk.{i}.attn_q_norm", "model.layers.{i}.self_attn.q_norm"),
    ("blk.{i}.attn_k_norm", "model.layers.{i}.self_attn.k_norm"),
    ("blk.{i}.ffn_norm", "model.layers.{i}.post_attention_layernorm"),
    ("blk.{i}.ffn_gate", "model.layers.{i}.mlp.gate_proj"),
    ("blk.{i}.ffn_up", "model.layers.{i}.mlp.up_proj"),
    ("blk.{i}.ffn_down", "model.layers.{i}.mlp.down_proj"),
)
# Phi-3 fuses q/k/v in attn_qkv and gate/up in ffn_up, as its Hugging Face checkpoint does
_FUSED_IN_PHI3 = ("attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up")
PHI3_TENSOR_NAMES = (
    *(pair for pair in TENSOR_NAMES if pair[0].rsplit(".", 1)[-1] not in _FUSED_IN_PHI3),
    ("blk.{i}.attn_qkv", "model.layers.{i}.self_attn.qkv_proj"),
    ("blk.{i}.ffn_up", "model.layers.{i}.mlp.gate_up_proj"),  # the gate rows, then the up rows
)
# Gemma 2 and 3: the "sandwich" norms, named by llama.cpp after their place, not by HF's
# (HF's post_attention_layernorm normalises the attention output here, not the MLP input)
_SANDWICH = ("blk.{i}.ffn_norm", "blk.{i}.attn_q_norm", "blk.{i}.attn_k_norm")
GEMMA2_TENSOR_NAMES = (
    *(pair for pair in TENSOR_NAMES if pair[0] not in _SANDWICH),
    ("blk.{i}.post_attention_norm", "model.layers.{i}.post_attention_layernorm"),
    ("blk.{i}.ffn_norm", "model.layers.{i}.pre_feedforward_layernorm"),
    ("blk.{i}.post_ffw_norm", "model.layers.{i}.post_feedforward_layernorm"),
)
GEMMA3_TENSOR_NAMES = (
    *GEMMA2_TENSOR_NAMES,
    ("blk.{i}.attn_q_norm", "model.layers.{i}.self_attn.q_norm"),
    ("blk.{i}.attn_k_norm", "model.layers.{i}.self_attn.k_norm"),
)
GPTNEOX_TENSOR_NAMES = (
    ("token_embd", "gpt_neox.embed_in"),
    ("output_norm", "gpt_neox.final_layer_norm"),
    ("output", "embed_out"),
    ("blk.{i}.attn_norm", "gpt_neox.layers.{i}.input_layernorm"),
    ("blk.{i}.attn_qkv", "gpt_neox.layers.{i}.attention.query_key_value"),
    ("blk.{i}.attn_output", "gpt_neox.layers.{i}.attention.dense"),
    ("blk.{i}.ffn_norm", "gpt_neox.layers.{i}.post_attention_layernorm"),
    ("blk.{i}.ffn_up", "gpt_neox.layers.{i}.mlp.dense_h_to_4h"),
    ("blk.{i}.ffn_down", "gpt_neox.layers.{i}.mlp.dense_4h_to_h"),
)
# llama.cpp's "bert" (sentence-embedding encoders such as all-MiniLM): its converter keeps
# only the encoder of a BertModel (no pooler, no MLM head) under these names.
BERT_TENSOR_NAMES = (
    ("token_embd", "embeddings.word_embeddings"),
    ("token_types", "embeddings.token_type_embeddings"),
    ("position_embd", "embeddings.position_embeddings"),
    ("token_embd_norm", "embeddings.LayerNorm"),
    ("blk.{i}.attn_q", "encoder.layer.{i}.attention.self.query"),
    ("blk.{i}.attn_k", "encoder.layer.{i}.attention.self.key"),
    ("blk.{i}.attn_v", "encoder.layer.{i}.attention.self.value"),
    ("blk.{i}.attn_output", "encoder.layer.{i}.attention.output.dense"),
    ("blk.{i}.attn_output_norm", "encoder.layer.{i}.attention.output.LayerNorm"),
    ("blk.{i}.ffn_up", "encoder.layer.{i}.intermediate.dense"),
    ("blk.{i}.ffn_down", "encoder.layer.{i}.output.dense"),
    ("blk.{i}.layer_output_norm", "encoder.layer.{i}.output.LayerNorm"),
)
BERT_CONFIG_KEYS = {
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "context_length": "max_position_embeddings",
    "attention.layer_norm_epsilon": "layer_norm_eps",
}
ROPE_PERMUTED = {"q_proj": "num_attention_heads", "k_proj": "num_key_value_heads"}
SUFFIX = r"(?P<suffix>\.weight|\.bias)"


@dataclass(frozen=True)
class Architecture:
    """One `general.architecture` tformer reads (and, for decoders, writes)."""

    name: str  # general.architecture
    model_type: str  # the Hugging Face model_type it corresponds to (a `families/` record)
    hf_class: str  # the Hugging Face model class it loads as (its task head)
    # llama.cpp's converter reorders q/k rows for the interleaved rotary it runs for this
    # architecture ("llama"); Qwen2/Qwen3 run rotate-half rotary ("neox") and keep HF's order.
    interleaved_rope: bool = False
    biases: tuple[str, ...] = ()  # the projections llama.cpp's loader reads a bias for
    # llama.cpp's loader reads Llama 3's rope scaling as a `rope_freqs` tensor (gguf_rope.py)
    rope_freqs: bool = False
    tensor_names: tuple[tuple[str, str], ...] = TENSOR_NAMES  # GGUF <-> HF, see TENSOR_NAMES
    config_keys: dict[str, str] = field(default_factory=lambda: CONFIG_KEYS)
    encoder: bool = False  # an embedding model (llama.cpp's "bert"), not a decoder
    # llama.cpp's converter regroups GPT-NeoX's query_key_value rows (each head's q, k, v in
    # turn) as all q, then all k, then all v
    qkv_per_head: bool = False
    exported: bool = True  # False: read only (export is checked against llama.cpp per arch)
    # Gemma's RMSNorm scales by (1 + w) and stores w; llama.cpp's converter adds the 1 to
    # every "*norm.weight" and its graph scales by the stored value, so import subtracts it
    norm_offset: float = 0.0
    # llama.cpp's Gemma 2/3 rule for the scores' factor, by model size: 1/sqrt(hidden /
    # heads) in the 27B model (this many blocks), 1/sqrt(head_dim) in every other; no key
    # says it (transformers' query_pre_attn_scalar)
    large_model_blocks: int | None = None


_ATTENTION = ("attn_q", "attn_k", "attn_v")
ARCHITECTURES = (
    Architecture(
        "llama",
        "llama",
        "LlamaForCausalLM",
        interleaved_rope=True,
        biases=(*_ATTENTION, "attn_output", "ffn_gate", "ffn_up", "ffn_down"),
        rope_freqs=True,
    ),
    Architecture("qwen2", "qwen2", "Qwen2ForCausalLM", biases=_ATTENTION),
    Architecture("qwen3", "qwen3", "Qwen3ForCausalLM"),
    Architecture("phi3", "phi3", "Phi3ForCausalLM", tensor_names=PHI3_TENSOR_NAMES, exported=False),
    Architecture("gemma", "gemma", "GemmaForCausalLM", exported=False, norm_offset=1.0),
    Architecture(
        "gemma2",
        "gemma2",
        "Gemma2ForCausalLM",
        tensor_names=GEMMA2_TENSOR_NAMES,
        exported=False,
        norm_offset=1.0,
        large_model_blocks=46,
    ),
    Architecture(
        "gemma3",
        "gemma3_text",
        "Gemma3ForCausalLM",
        tensor_names=GEMMA3_TENSOR_NAMES,
        exported=False,
        norm_offset=1.0,
        large_model_blocks=62,
    ),
    Architecture(
        "gptneox",
        "gpt_neox",
        "GPTNeoXForCausalLM",
        biases=("attn_qkv", "attn_output", "ffn_up", "ffn_down"),
        tensor_names=GPTNEOX_TENSOR_NAMES,
        qkv_per_head=True,
        exported=False,
    ),
    Architecture(
        "bert",
        "bert",
        "BertModel",
        tensor_names=BERT_TENSOR_NAMES,
        config_keys=BERT_CONFIG_KEYS,
        encoder=True,
    ),
)


def architecture(name: str) -> Architecture | None:
    """The `Architecture` whose general.architecture is `name`, if tformer supports it."""
    return next((a for a in ARCHITECTURES if a.name == name), None)


# the architectures export writes
WRITTEN = tuple(a for a in ARCHITECTURES if not a.encoder and a.exported)


def architecture_for_model_type(model_type: str) -> Architecture | None:
    """The GGUF architecture a Hugging Face `model_type` is written as, if tformer writes one."""
    return next((a for a in WRITTEN if a.model_type == model_type), None)


def _rename(name: str, source_side: int, table: tuple[tuple[str, str], ...]) -> str | None:
    for pair in table:
        pattern = re.escape(pair[source_side]).replace(r"\{i\}", r"(?P<i>\d+)") + SUFFIX
        match = re.fullmatch(pattern, name)
        if match:
            target = pair[1 - source_side].format(i=match.groupdict().get("i"))
            return target + match.group("suffix")
    return None


def hf_name(gguf_name: str, arch: Architecture) -> str | None:
    """The Hugging Face name of GGUF tensor `gguf_name`, or None if `arch` has none."""
    return _rename(gguf_name, 0, arch.tensor_names)


def gguf_name(hf_name: str, arch: Architecture) -> str | None:
    """The GGUF name of Hugging Face tensor `hf_name`, or None if `arch` has none."""
    return _rename(hf_name, 1, arch.tensor_names)


def rope_heads(hf_name: str, hf_config: dict[str, int]) -> int | None:
    """How many heads a q/k projection (weight or bias) holds; None for any other tensor."""
    parts = hf_name.split(".")
    key = ROPE_PERMUTED.get(parts[-2]) if len(parts) > 1 else None
    if key is None:
        return None
    return hf_config.get(key) or hf_config["num_attention_heads"]


def _reorder(t: Tensor, n_heads: int, *, to_pairs: bool) -> Tensor:
    """Each head's rows as (half, j) <-> (j, pair member): rotate-half <-> interleaved."""
    half = t.shape[0] // n_heads // 2
    # (H, 2, head_dim/2, ...) <-> (H, head_dim/2, 2, ...)
    grouped = t.reshape(n_heads, 2, half, -1) if to_pairs else t.reshape(n_heads, half, 2, -1)
    return grouped.transpose(1, 2).reshape(t.shape)


def permute_rope(t: Tensor, n_heads: int) -> Tensor:
    """llama.cpp's q/k row order from Hugging Face's, (out[, in]) -> (out[, in]).

    Hugging Face and tformer rotate halves (j, j + head_dim/2) of each head; llama.cpp's
    "llama" architecture rotates interleaved pairs (2j, 2j+1), so its converter moves row
    j + head_dim/2 next to row j. A bias (a vector) moves like the rows it belongs to.
    """
    return _reorder(t, n_heads, to_pairs=True)


def unpermute_rope(t: Tensor, n_heads: int) -> Tensor:
    """Undo `permute_rope`: llama.cpp's q/k row order back to Hugging Face's."""
    return _reorder(t, n_heads, to_pairs=False)


def per_head_qkv(t: Tensor, n_heads: int) -> Tensor:
    """llama.cpp's gptneox attn_qkv rows (all q, all k, all v) back in GPT-NeoX's order (each
    head's q, k, v in turn), (3 * hidden[, in]) -> the same shape. A bias moves with its rows."""
    return fuse_rows(split_rows(t, [t.shape[0] // 3] * 3, 1), n_heads)
