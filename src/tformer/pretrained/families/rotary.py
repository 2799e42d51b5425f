"""The Llama-derived decoders: Llama, Mistral, Qwen2 / Qwen2.5, Qwen3 (rotary, RMSNorm, gated MLP).

The shared `ROTARY_*` values are public so that families built on Llama's layout reuse them.
"""

from __future__ import annotations

from typing import Any

from tformer.pretrained.families.record import ATTENTION, SIZE_KEYS, Family

ROTARY_DECODER = {
    "arch": "decoder",
    "positional": "rotary",
    "norm": "rmsnorm",
    "norm_position": "pre",
    "embedding_norm": False,
    "dropout": 0.0,
    "sliding_window": None,  # Mistral's own field (MISTRAL below)
}
# config.json keys the Llama-derived families share (their differences are in `fixed`)
ROTARY_KEYS = (
    *SIZE_KEYS,
    ("n_kv_heads", "num_key_value_heads"),
    ("head_dim", "head_dim"),
    ("rope_theta", "rope_theta"),
    ("norm_eps", "rms_norm_eps"),
    ("activation", "hidden_act"),
    ("attention_dropout", "attention_dropout"),
    ("tie_embeddings", "tie_word_embeddings"),
    ("pad_id", "pad_token_id"),
    ("bos_id", "bos_token_id"),
    ("eos_id", "eos_token_id"),
)
ROTARY_DEFAULTS = {
    "num_key_value_heads": None,
    "head_dim": None,
    "max_position_embeddings": 2048,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "attention_dropout": 0.0,
    "tie_word_embeddings": False,
    "pad_token_id": None,
    "bos_token_id": None,
    "eos_token_id": None,
}
GATED = {"silu": "swiglu", "gelu": "geglu"}  # the Llama-derived MLPs are always gated
ROTARY_TENSORS = (
    ("decoder.embeddings.tokens", "{p}embed_tokens"),
    ("decoder.blocks.{i}.self_attn_norm", "{p}layers.{i}.input_layernorm"),
    *(
        (f"decoder.blocks.{{i}}.self_attn.{n}", f"{{p}}layers.{{i}}.self_attn.{n}")
        for n in (*ATTENTION, "q_norm", "k_norm")
    ),
    ("decoder.blocks.{i}.self_attn.out_proj", "{p}layers.{i}.self_attn.o_proj"),
    ("decoder.blocks.{i}.ffn_norm", "{p}layers.{i}.post_attention_layernorm"),
    ("decoder.blocks.{i}.ffn.gate", "{p}layers.{i}.mlp.gate_proj"),
    ("decoder.blocks.{i}.ffn.up", "{p}layers.{i}.mlp.up_proj"),
    ("decoder.blocks.{i}.ffn.down", "{p}layers.{i}.mlp.down_proj"),
    ("decoder.final_norm", "{p}norm"),
    ("lm_head.proj.weight", "lm_head.weight"),
)

LLAMA = Family(
    model_types=("llama",),
    architectures={"LlamaForCausalLM": "lm"},
    bare_architectures=(),
    base_prefix="model.",
    fixed=ROTARY_DECODER,
    config_keys=(
        *ROTARY_KEYS,
        ("attention_bias", "attention_bias"),
        ("bias", "mlp_bias"),
    ),
    hf_defaults={**ROTARY_DEFAULTS, "attention_bias": False, "mlp_bias": False},
    activations=GATED,
    tensors=ROTARY_TENSORS,
    ignored=(r"rotary_emb\.inv_freq$",),
    must_be={"pretraining_tp": 1},
)

# Mistral: Llama's layers without biases, and sliding-window attention (each position sees
# the last `sliding_window` positions; HF's default window is 4096, null turns it off).
_MISTRAL_FIXED = {k: v for k, v in ROTARY_DECODER.items() if k != "sliding_window"}
_MISTRAL_FIXED["bias"] = False
MISTRAL = Family(
    model_types=("mistral",),
    architectures={"MistralForCausalLM": "lm"},
    bare_architectures=(),
    base_prefix="model.",
    fixed=_MISTRAL_FIXED,
    config_keys=(*ROTARY_KEYS, ("sliding_window", "sliding_window")),
    hf_defaults={**ROTARY_DEFAULTS, "sliding_window": 4096},
    nullable=("sliding_window",),  # Mistral 7B v0.2 on: null, attention over every position
    activations=GATED,
    tensors=ROTARY_TENSORS,
    ignored=(r"rotary_emb\.inv_freq$",),
)


def _qwen_layer_types(hf: dict[str, Any]) -> list[str]:
    """transformers' rule for a config.json without `layer_types`: blocks from
    max_window_layers on are windowed (when use_sliding_window is on)."""
    first = hf.get("max_window_layers", 28)
    return [
        "sliding_attention" if i >= first else "full_attention"
        for i in range(hf["num_hidden_layers"])
    ]


# Qwen2 / Qwen2.5: Llama with biases on q, k and v only. A sliding window is off unless
# `use_sliding_window` turns it on (config.json may name a window it does not use); then it
# applies to the blocks `layer_types` marks (from max_window_layers on, in older files).
QWEN2 = Family(
    model_types=("qwen2",),
    architectures={"Qwen2ForCausalLM": "lm"},
    bare_architectures=(),
    base_prefix="model.",
    fixed={
        k: v
        for k, v in {**ROTARY_DECODER, "bias": False, "qkv_bias": True}.items()
        if k != "sliding_window"
    },
    config_keys=(
        *ROTARY_KEYS,
        ("sliding_window", "sliding_window"),
        ("layer_types", "layer_types"),
    ),
    hf_defaults={
        **ROTARY_DEFAULTS,
        "max_position_embeddings": 32768,
        "sliding_window": None,
        "layer_types": _qwen_layer_types,
    },
    activations=GATED,
    tensors=ROTARY_TENSORS,
    ignored=(r"rotary_emb\.inv_freq$",),
    window_switch="use_sliding_window",
)

# Qwen3: RMSNorm over each head's queries and keys; head_dim is its own setting (128 unless
# config.json says otherwise, not hidden_size / heads); `attention_bias` covers all four
# attention projections, the MLP never has biases.
QWEN3 = Family(
    model_types=("qwen3",),
    architectures={"Qwen3ForCausalLM": "lm"},
    bare_architectures=(),
    base_prefix="model.",
    fixed={**ROTARY_DECODER, "bias": False, "qk_norm": True},
    config_keys=(*ROTARY_KEYS, ("attention_bias", "attention_bias")),
    hf_defaults={
        **ROTARY_DEFAULTS,
        "head_dim": 128,
        "max_position_embeddings": 32768,
        "attention_bias": False,
    },
    activations=GATED,
    tensors=ROTARY_TENSORS,
    ignored=(r"rotary_emb\.inv_freq$",),
    must_be={"use_sliding_window": False},
)
