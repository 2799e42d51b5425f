"""ModernBERT: a pre-norm rotary encoder with alternating local and global attention.

Every third block (from the first) attends to all positions with rotary base
`global_rope_theta`; the others see `local_attention // 2` positions on either side with
base `local_rope_theta` (tformer's encoder window: sliding_window = local_attention). No
biases in the linears or the LayerNorms (norm_bias, attention_bias, mlp_bias), an embedding
norm that is also the first block's attention norm (layer 0 has none), a final norm, and a
GeGLU whose fused `Wi` holds the activated half first, then the gate: tformer's `gate`, then
`up`. q, k and v are fused in `Wqkv`. The MLM and classification heads share one dense + GELU
+ norm (`head`): the MLM head's transform, the classifiers' pooler, over the [CLS] vector or
the mean of the tokens (`classifier_pooling`) or over each token.

transformers >= 5 writes the two rotary bases in `rope_parameters` per block type
("full_attention", "sliding_attention") and every block's type in `layer_types`; older files
have `global_rope_theta`, `local_rope_theta` and `global_attn_every_n_layers`. Both are read;
export writes the older keys, which transformers still reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tformer.checkpoint import CheckpointError
from tformer.pretrained.families.record import SIZE_KEYS, Family, classes


def _rope_theta(block_type: str, default: float) -> Callable[[dict[str, Any]], float]:
    """The rotary base of `block_type` blocks in a transformers >= 5 config.json (or the
    default, for an older file without the key)."""

    def read(hf: dict[str, Any]) -> float:
        table = (hf.get("rope_parameters") or {}).get(block_type) or {}
        if table.get("rope_type", "default") != "default":
            raise CheckpointError(
                f"config.json rescales the {block_type} blocks' rotary (rope_type "
                f"{table['rope_type']!r}); tformer implements no rope scaling for modernbert"
            )
        return table.get("rope_theta", default)

    return read


def _layer_types(hf: dict[str, Any]) -> list[str]:
    """transformers' rule for a file without `layer_types`: every n-th block global."""
    every = hf.get("global_attn_every_n_layers", 3)
    return [
        "sliding_attention" if i % every else "full_attention"
        for i in range(hf["num_hidden_layers"])
    ]


MODERNBERT = Family(
    model_types=("modernbert",),
    architectures=classes(
        "ModernBert",
        {
            "ForMaskedLM": "masked-lm",
            "Model": "embedding",
            "ForSequenceClassification": "sequence-classification",
            "ForTokenClassification": "token-classification",
            "ForQuestionAnswering": "question-answering",  # the tagger's layers, 2 outputs
        },
    ),
    bare_architectures=("ModernBertModel",),
    base_prefix="model.",
    fixed={
        "arch": "encoder",
        "positional": "rotary",
        "norm": "layernorm",
        "norm_position": "pre",
        "embedding_norm": True,
        "first_block_attn_norm": False,
        "type_vocab_size": 0,
        "dropout": 0.0,
        "pooler": True,  # `head` before the classifier, per token too
        "pooler_activation": "gelu",
        "pooler_norm": True,
    },
    config_keys=(
        *SIZE_KEYS,
        ("norm_eps", "norm_eps"),
        ("norm_bias", "norm_bias"),
        ("activation", "hidden_activation"),
        ("attention_dropout", "attention_dropout"),
        ("bias", "mlp_bias"),
        ("attention_bias", "attention_bias"),
        ("head_bias", "classifier_bias"),
        ("rope_theta", "global_rope_theta"),
        ("rope_local_theta", "local_rope_theta"),
        ("sliding_window", "local_attention"),
        ("layer_types", "layer_types"),
        ("pooling", "classifier_pooling"),
        ("tie_embeddings", "tie_word_embeddings"),
        ("pad_id", "pad_token_id"),
        ("bos_id", "bos_token_id"),
        ("eos_id", "eos_token_id"),
    ),
    # ModernBertConfig's defaults (ModernBERT-base's)
    hf_defaults={
        "max_position_embeddings": 8192,
        "norm_eps": 1e-5,
        "norm_bias": False,
        "hidden_activation": "gelu",
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "attention_bias": False,
        "classifier_bias": False,
        "global_rope_theta": _rope_theta("full_attention", 160_000.0),
        "local_rope_theta": _rope_theta("sliding_attention", 10_000.0),
        "local_attention": 128,
        "layer_types": _layer_types,
        "classifier_pooling": "cls",
        "tie_word_embeddings": True,
        "pad_token_id": 50283,
        "bos_token_id": 50281,
        "eos_token_id": 50282,
    },
    # the gated MLP's activation; the heads apply GELU (`classifier_activation`, below)
    activations={"gelu": "geglu", "gelu_pytorch_tanh": "geglu_tanh", "silu": "swiglu"},
    tensors=(
        ("encoder.embeddings.tokens", "{p}embeddings.tok_embeddings"),
        ("encoder.embeddings.norm", "{p}embeddings.norm"),
        ("encoder.blocks.{i}.self_attn_norm", "{p}layers.{i}.attn_norm"),
        ("encoder.blocks.{i}.self_attn.q_proj", "{p}layers.{i}.attn.Wqkv", "concat:0"),
        ("encoder.blocks.{i}.self_attn.k_proj", "{p}layers.{i}.attn.Wqkv", "concat:1"),
        ("encoder.blocks.{i}.self_attn.v_proj", "{p}layers.{i}.attn.Wqkv", "concat:2"),
        ("encoder.blocks.{i}.self_attn.out_proj", "{p}layers.{i}.attn.Wo"),
        ("encoder.blocks.{i}.ffn_norm", "{p}layers.{i}.mlp_norm"),
        ("encoder.blocks.{i}.ffn.gate", "{p}layers.{i}.mlp.Wi", "concat:0"),  # activated
        ("encoder.blocks.{i}.ffn.up", "{p}layers.{i}.mlp.Wi", "concat:1"),
        ("encoder.blocks.{i}.ffn.down", "{p}layers.{i}.mlp.Wo"),
        ("encoder.final_norm", "{p}final_norm"),
        ("head.transform", "head.dense"),
        ("head.norm", "head.norm"),
        ("head.proj", "decoder"),
        ("head.pooler", "head.dense"),
        ("head.pooler_norm", "head.norm"),
        ("head.classifier", "classifier"),
    ),
    ignored=(r"inv_freq$",),
    must_be={
        "classifier_activation": "gelu",
        "decoder_bias": True,
        "sparse_prediction": False,
    },
)
