"""Phi-3 (Phi-3, Phi-3.5, Phi-4-mini): Llama's layers with q/k/v and gate/up each fused.

`qkv_proj` holds all query rows, then the key rows, then the value rows (fewer with grouped-
query heads); `gate_up_proj` the gate rows, then the up rows. Both split on import and fuse
on export ("concat" parts, sized by the model). No biases anywhere; partial rotary from
`partial_rotary_factor`; a sliding window when config.json sets one (Phi-3-mini: 2047),
applied as transformers applies Mistral's. Long-context rope ("longrope", older "su") picks
one of two frequency tables by the running length and rescales cos/sin: refused.
"""

from __future__ import annotations

from tformer.pretrained.families.record import Family
from tformer.pretrained.families.rotary import (
    GATED,
    ROTARY_DECODER,
    ROTARY_DEFAULTS,
    ROTARY_KEYS,
    ROTARY_TENSORS,
)

_FUSED = (
    ("decoder.blocks.{i}.self_attn.q_proj", "{p}layers.{i}.self_attn.qkv_proj", "concat:0"),
    ("decoder.blocks.{i}.self_attn.k_proj", "{p}layers.{i}.self_attn.qkv_proj", "concat:1"),
    ("decoder.blocks.{i}.self_attn.v_proj", "{p}layers.{i}.self_attn.qkv_proj", "concat:2"),
    ("decoder.blocks.{i}.ffn.gate", "{p}layers.{i}.mlp.gate_up_proj", "concat:0"),
    ("decoder.blocks.{i}.ffn.up", "{p}layers.{i}.mlp.gate_up_proj", "concat:1"),
)
_SEPARATE = {rule[0] for rule in _FUSED}

PHI3 = Family(
    model_types=("phi3",),
    architectures={"Phi3ForCausalLM": "lm"},
    bare_architectures=(),
    base_prefix="model.",
    fixed={
        **{k: v for k, v in ROTARY_DECODER.items() if k != "sliding_window"},
        "bias": False,
    },
    config_keys=(
        *ROTARY_KEYS,
        ("sliding_window", "sliding_window"),
        ("rotary_fraction", "partial_rotary_factor"),
    ),
    hf_defaults={
        **ROTARY_DEFAULTS,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "sliding_window": None,
        "partial_rotary_factor": 1.0,
    },
    activations=GATED,
    tensors=(*_FUSED, *(rule for rule in ROTARY_TENSORS if rule[0] not in _SEPARATE)),
    ignored=(r"rotary_emb\.inv_freq$",),
    rope_scalings=(),
)
