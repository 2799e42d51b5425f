"""T5 (v1.0) and T5 v1.1 / Flan-T5: the pre-norm encoder-decoder with relative position biases.

RMSNorm (T5LayerNorm), no biases anywhere, unscaled attention (its init absorbs the
1 / sqrt(d_kv)), no position vectors: each stack's first self-attention layer holds a table of
per-head biases by bucketed distance that every layer of the stack adds to its scores (none in
cross-attention). v1.0 has a ReLU feed-forward (wi, wo) and ties the output projection to the
embeddings, rescaling the decoder output by d_model ** -0.5 first; v1.1 and Flan-T5 have a
gated tanh-GELU one (wi_0 the gate, wi_1, wo) and an untied output projection.

T5EncoderModel (the encoder alone, sentence-T5's backbone) is a record of its own, an encoder
with the embedding head, over the same tensor table.
"""

from __future__ import annotations

from tformer.pretrained.families.record import Family

# (tformer, HF) names of q, k, v and the output projection
_ATTENTION = (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("out_proj", "o"))
_FFN_LAYER = {"encoder": 1, "decoder": 2}  # the sub-layer index of each stack's feed-forward


def _ffn(names: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Rules for the feed-forward projections of both stacks (tformer, HF) by `names`."""
    return tuple(
        (f"{s}.blocks.{{i}}.ffn.{ours}", f"{s}.block.{{i}}.layer.{n}.DenseReluDense.{theirs}")
        for s, n in _FFN_LAYER.items()
        for ours, theirs in names
    )


_FIXED = {
    "positional": "relative",
    "norm": "rmsnorm",
    "norm_position": "pre",
    "embedding_norm": False,
    "bias": False,
    "attention_scale": 1.0,
    "scale_embeddings": False,
}
# config.json keys both stacks read
_KEYS = (
    ("vocab_size", "vocab_size"),
    ("d_model", "d_model"),
    ("n_heads", "num_heads"),
    ("head_dim", "d_kv"),
    ("n_layers", "num_layers"),
    ("d_ff", "d_ff"),
    ("max_seq_len", "n_positions"),
    ("relative_buckets", "relative_attention_num_buckets"),
    ("relative_max_distance", "relative_attention_max_distance"),
    ("norm_eps", "layer_norm_epsilon"),
    ("activation", "feed_forward_proj"),
    ("dropout", "dropout_rate"),
    ("pad_id", "pad_token_id"),
    ("eos_id", "eos_token_id"),
)

T5 = Family(
    model_types=("t5",),
    architectures={"T5ForConditionalGeneration": "lm"},
    bare_architectures=(),
    base_prefix="",
    fixed={**_FIXED, "arch": "encoder-decoder", "lm_head_bias": False},
    config_keys=(
        *_KEYS,
        ("n_encoder_layers", "num_layers"),
        ("n_decoder_layers", "num_decoder_layers"),
        ("tie_embeddings", "tie_word_embeddings"),
        ("scale_output", "scale_decoder_outputs"),
        ("decoder_start_id", "decoder_start_token_id"),
    ),
    hf_defaults={
        "num_decoder_layers": lambda hf: hf["num_layers"],
        "n_positions": 512,  # transformers 5 no longer writes it: the contexts T5 trained at
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "layer_norm_epsilon": 1e-6,
        "feed_forward_proj": "relu",
        "dropout_rate": 0.1,
        "tie_word_embeddings": True,
        # files older than transformers 5 say only tie_word_embeddings, which implied it
        "scale_decoder_outputs": lambda hf: hf.get("tie_word_embeddings", True) is not False,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": lambda hf: hf.get("pad_token_id", 0),  # T5 starts from pad
    },
    activations={"relu": "relu", "gated-gelu": "geglu_tanh"},
    tensors=(
        ("{s}.embeddings.tokens.weight", "shared.weight"),  # one matrix for both stacks
        (
            "{s}.embeddings.positions.weight",
            "{s}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        ),
        *(
            (
                f"{{s}}.blocks.{{i}}.self_attn.{ours}",
                f"{{s}}.block.{{i}}.layer.0.SelfAttention.{hf}",
            )
            for ours, hf in _ATTENTION
        ),
        ("{s}.blocks.{i}.self_attn_norm", "{s}.block.{i}.layer.0.layer_norm"),
        *(
            (
                f"decoder.blocks.{{i}}.cross_attn.{ours}",
                f"decoder.block.{{i}}.layer.1.EncDecAttention.{hf}",
            )
            for ours, hf in _ATTENTION
        ),
        ("decoder.blocks.{i}.cross_attn_norm", "decoder.block.{i}.layer.1.layer_norm"),
        *_ffn((("up", "wi"), ("down", "wo"))),
        ("encoder.blocks.{i}.ffn_norm", "encoder.block.{i}.layer.1.layer_norm"),
        ("decoder.blocks.{i}.ffn_norm", "decoder.block.{i}.layer.2.layer_norm"),
        ("{s}.final_norm", "{s}.final_layer_norm"),
        ("lm_head.proj.weight", "lm_head.weight"),
    ),
    gated_tensors=_ffn((("gate", "wi_0"), ("up", "wi_1"))),
    ignored=(
        r"^(encoder|decoder)\.embed_tokens\.weight$",
        # transformers ignores it too: cross-attention has no position bias
        r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$",
    ),
    untied_when_stored="lm_head.weight",
)

# the encoder alone: T5's "encoder." tensors (the decoder's rules match nothing), last hidden
# states after the final norm, pooled by the embedding head
T5_ENCODER = Family(
    model_types=("t5",),
    architectures={"T5EncoderModel": "embedding"},
    bare_architectures=(),
    base_prefix="",
    fixed={**_FIXED, "arch": "encoder"},
    config_keys=_KEYS,
    hf_defaults=T5.hf_defaults,
    activations=T5.activations,
    tensors=T5.tensors,
    gated_tensors=T5.gated_tensors,
    ignored=T5.ignored,
)
