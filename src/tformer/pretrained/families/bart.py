"""BART: the post-norm encoder-decoder with learned positions and a shared embedding matrix."""

from __future__ import annotations

from tformer.pretrained.families.record import ATTENTION, Family

BART = Family(
    model_types=("bart",),
    architectures={"BartForConditionalGeneration": "lm", "BartModel": "lm"},
    bare_architectures=("BartModel",),
    base_prefix="model.",
    fixed={
        "arch": "encoder-decoder",
        "positional": "learned",
        "norm": "layernorm",
        "norm_position": "post",
        "embedding_norm": True,
        "bias": True,
        "lm_head_bias": True,
    },
    config_keys=(
        ("vocab_size", "vocab_size"),
        ("d_model", "d_model"),
        ("n_heads", "encoder_attention_heads"),
        ("n_layers", "encoder_layers"),
        ("n_encoder_layers", "encoder_layers"),
        ("n_decoder_layers", "decoder_layers"),
        ("d_ff", "encoder_ffn_dim"),
        ("max_seq_len", "max_position_embeddings"),
        ("activation", "activation_function"),
        ("dropout", "dropout"),
        ("attention_dropout", "attention_dropout"),
        ("scale_embeddings", "scale_embedding"),
        ("tie_embeddings", "tie_word_embeddings"),
        ("pad_id", "pad_token_id"),
        ("bos_id", "bos_token_id"),
        ("eos_id", "eos_token_id"),
        ("decoder_start_id", "decoder_start_token_id"),
    ),
    hf_defaults={
        "max_position_embeddings": 1024,
        "activation_function": "gelu",
        "dropout": 0.1,
        "attention_dropout": 0.0,
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
    },
    activations={"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh"},
    tensors=(
        ("{s}.embeddings.tokens.weight", "{p}shared.weight"),  # one matrix, tied
        ("{s}.embeddings.positions.weight", "{p}{s}.embed_positions.weight", "offset2"),
        ("{s}.embeddings.norm", "{p}{s}.layernorm_embedding"),
        *(
            (f"{{s}}.blocks.{{i}}.self_attn.{n}", f"{{p}}{{s}}.layers.{{i}}.self_attn.{n}")
            for n in (*ATTENTION, "out_proj")
        ),
        *(
            (f"decoder.blocks.{{i}}.cross_attn.{n}", f"{{p}}decoder.layers.{{i}}.encoder_attn.{n}")
            for n in (*ATTENTION, "out_proj")
        ),
        ("{s}.blocks.{i}.self_attn_norm", "{p}{s}.layers.{i}.self_attn_layer_norm"),
        ("decoder.blocks.{i}.cross_attn_norm", "{p}decoder.layers.{i}.encoder_attn_layer_norm"),
        ("{s}.blocks.{i}.ffn.up", "{p}{s}.layers.{i}.fc1"),
        ("{s}.blocks.{i}.ffn.down", "{p}{s}.layers.{i}.fc2"),
        ("{s}.blocks.{i}.ffn_norm", "{p}{s}.layers.{i}.final_layer_norm"),
        ("lm_head.proj.bias", "final_logits_bias", "row"),
        ("lm_head.proj.weight", "lm_head.weight"),
    ),
    ignored=(r"(encoder|decoder)\.embed_tokens\.weight$",),
    must_be={"normalize_before": False, "add_final_layer_norm": False},
    same=(
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ),
)
