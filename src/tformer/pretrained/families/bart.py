"""BART: the post-norm encoder-decoder with learned positions and a shared embedding matrix.

Its config.json keys and layer tensor names are public: Marian (families/marian.py) kept them.
"""

from __future__ import annotations

from tformer.pretrained.families.record import ATTENTION, Family

# config.json keys of BART and the encoder-decoders that kept its config (Marian)
BART_KEYS = (
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
)
# the encoder and decoder layers, the shared token matrix and the logits bias (a (1, V) row)
BART_TENSORS = (
    ("{s}.embeddings.tokens.weight", "{p}shared.weight"),  # one matrix, tied
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
)
BART_DEFAULTS = {
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
}
BART_SAME = (
    ("encoder_attention_heads", "decoder_attention_heads"),
    ("encoder_ffn_dim", "decoder_ffn_dim"),
)
POST_NORM_SEQ2SEQ = {
    "arch": "encoder-decoder",
    "norm": "layernorm",
    "norm_position": "post",
    "bias": True,
    "lm_head_bias": True,
}

BART = Family(
    model_types=("bart",),
    architectures={"BartForConditionalGeneration": "lm", "BartModel": "lm"},
    bare_architectures=("BartModel",),
    base_prefix="model.",
    fixed={**POST_NORM_SEQ2SEQ, "positional": "learned", "embedding_norm": True},
    config_keys=BART_KEYS,
    hf_defaults=BART_DEFAULTS,
    activations={"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh"},
    tensors=(
        *BART_TENSORS,
        ("{s}.embeddings.positions.weight", "{p}{s}.embed_positions.weight", "offset2"),
        ("{s}.embeddings.norm", "{p}{s}.layernorm_embedding"),
    ),
    ignored=(r"(encoder|decoder)\.embed_tokens\.weight$",),
    # tie_word_embeddings=False unties, in transformers >= 5, the encoder's and the decoder's
    # embeddings from `shared` too (which is then unused): three matrices where tformer's
    # encoder-decoder has one, so refused rather than read from `shared` and silently wrong
    must_be={"normalize_before": False, "add_final_layer_norm": False, "tie_word_embeddings": True},
    same=BART_SAME,
)
