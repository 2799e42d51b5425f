"""The Gemma decoders: Gemma, Gemma 2 and Gemma 3 (text), Llama's layout with Gemma's choices.

All three scale token embeddings by sqrt(hidden_size), store RMSNorm weights w and scale by
(1 + w), run a gated tanh-GELU MLP and tie the output projection to the embeddings by default.
Gemma 2 adds the "sandwich" norms (each sub-layer's output is normalised too, so
post_attention_layernorm is the attention output's norm, not the MLP input's as in Llama),
query_pre_attn_scalar (the scores' factor is its inverse square root, not head_dim's),
soft-capping of the attention scores and the final logits, and alternating local (sliding
window) and global attention. Gemma 3 keeps those but caps nothing (transformers ignores its
attn_logit_softcapping, so tformer accepts only null), adds Qwen3-style q/k norms and gives the
local blocks their own rotary base (rope_local_base_freq), never rescaled.
"""

from __future__ import annotations

from typing import Any

from tformer.pretrained.families.record import Family
from tformer.pretrained.families.rotary import (
    ROTARY_DECODER,
    ROTARY_DEFAULTS,
    ROTARY_KEYS,
    ROTARY_TENSORS,
)

_GEMMA_FIXED = {
    **ROTARY_DECODER,
    "bias": False,
    "scale_embeddings": True,
    "norm_weight_offset": 1.0,
    "sandwich_norm": False,
    "qk_norm": False,
    "attention_scale": None,
    "attention_softcap": None,
    "logit_softcap": None,
}
# transformers' GemmaConfig defaults (Gemma 7B's), for keys an older config.json leaves out
_GEMMA_DEFAULTS = {
    **ROTARY_DEFAULTS,
    "head_dim": 256,
    "max_position_embeddings": 8192,
    "hidden_act": "gelu_pytorch_tanh",
    "tie_word_embeddings": True,
    "attention_bias": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 2,
}
_GEMMA_KEYS = (*ROTARY_KEYS, ("attention_bias", "attention_bias"))

# Gemma: Llama's tensors; its config.json's hidden_act "gelu" means the tanh approximation
# (transformers replaces it with gelu_pytorch_tanh, with a warning)
GEMMA = Family(
    model_types=("gemma",),
    architectures={"GemmaForCausalLM": "lm"},
    bare_architectures=(),
    base_prefix="model.",
    fixed=_GEMMA_FIXED,
    config_keys=_GEMMA_KEYS,
    hf_defaults=_GEMMA_DEFAULTS,
    activations={"gelu_pytorch_tanh": "geglu_tanh", "gelu": "geglu_tanh"},
    tensors=ROTARY_TENSORS,
    must_be={"use_bidirectional_attention": None},
)


def _alternating_layer_types(every: int) -> Any:
    """transformers' rule for a config.json without `layer_types`: every `every`-th block
    (counting from one) global, the others local; Gemma 3's older files name `every` as
    sliding_window_pattern."""

    def layer_types(hf: dict[str, Any]) -> list[str]:
        period = hf.get("sliding_window_pattern", every)
        return [
            "sliding_attention" if (i + 1) % period else "full_attention"
            for i in range(hf["num_hidden_layers"])
        ]

    return layer_types


def _scalar_to_scale(scalar: float) -> float:
    """query_pre_attn_scalar s -> the scores' factor s ** -0.5."""
    return float(scalar) ** -0.5


def _scale_to_scalar(scale: float) -> int:
    """The factor back to the integer config.json holds (transformers types it int): a factor
    that is no integer's inverse square root reads back different, and export refuses it."""
    return round(scale**-2)


# The sandwich: input_layernorm before attention, post_attention_layernorm on its output,
# pre_/post_feedforward_layernorm around the MLP
_SANDWICH_TENSORS = (
    *(rule for rule in ROTARY_TENSORS if rule[0] != "decoder.blocks.{i}.ffn_norm"),
    ("decoder.blocks.{i}.self_attn_out_norm", "{p}layers.{i}.post_attention_layernorm"),
    ("decoder.blocks.{i}.ffn_norm", "{p}layers.{i}.pre_feedforward_layernorm"),
    ("decoder.blocks.{i}.ffn_out_norm", "{p}layers.{i}.post_feedforward_layernorm"),
)
_SANDWICH_KEYS = (
    *((name, "hidden_activation" if name == "activation" else key) for name, key in _GEMMA_KEYS),
    ("sliding_window", "sliding_window"),
    ("layer_types", "layer_types"),
    ("logit_softcap", "final_logit_softcapping"),
)
_SANDWICH_DEFAULTS = {
    **{k: v for k, v in _GEMMA_DEFAULTS.items() if k != "hidden_act"},
    "hidden_activation": "gelu_pytorch_tanh",
    "num_key_value_heads": 4,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
}
_SANDWICH_ACTIVATIONS = {"gelu_pytorch_tanh": "geglu_tanh", "gelu": "geglu"}
_QUERY_SCALE = {"attention_scale": ("query_pre_attn_scalar", _scalar_to_scale, _scale_to_scalar)}

GEMMA2 = Family(
    model_types=("gemma2",),
    architectures={"Gemma2ForCausalLM": "lm"},
    bare_architectures=(),
    base_prefix="model.",
    fixed={
        k: v
        for k, v in {**_GEMMA_FIXED, "sandwich_norm": True}.items()
        if k not in ("sliding_window", "attention_scale", "attention_softcap", "logit_softcap")
    },
    config_keys=(*_SANDWICH_KEYS, ("attention_softcap", "attn_logit_softcapping")),
    hf_defaults={
        **_SANDWICH_DEFAULTS,
        "layer_types": _alternating_layer_types(2),
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
    },
    converted_keys=_QUERY_SCALE,
    nullable=("sliding_window", "attn_logit_softcapping", "final_logit_softcapping"),
    activations=_SANDWICH_ACTIVATIONS,
    tensors=_SANDWICH_TENSORS,
    must_be={"use_bidirectional_attention": None},
)

GEMMA3_TEXT = Family(
    model_types=("gemma3_text",),
    architectures={"Gemma3ForCausalLM": "lm"},
    bare_architectures=(),
    base_prefix="model.",
    fixed={
        k: v
        for k, v in {**_GEMMA_FIXED, "sandwich_norm": True, "qk_norm": True}.items()
        if k not in ("sliding_window", "attention_scale", "logit_softcap")
    },
    config_keys=(*_SANDWICH_KEYS, ("rope_local_theta", "rope_local_base_freq")),
    hf_defaults={
        **_SANDWICH_DEFAULTS,
        "max_position_embeddings": 131072,
        "rope_theta": 1e6,
        "rope_local_base_freq": 1e4,
        "layer_types": _alternating_layer_types(6),
        "final_logit_softcapping": None,
    },
    converted_keys=_QUERY_SCALE,
    nullable=("sliding_window", "final_logit_softcapping"),
    activations=_SANDWICH_ACTIVATIONS,
    tensors=_SANDWICH_TENSORS,
    must_be={"use_bidirectional_attention": False, "attn_logit_softcapping": None},
)
