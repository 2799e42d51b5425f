"""GPT-NeoX and Pythia: parallel residual, partial rotary, LayerNorm with biases, exact GELU.

With `use_parallel_residual` (Pythia's setting) attention and the MLP both read the block's
input; `rotary_pct` (0.25 in Pythia) of each head's features are rotated. `query_key_value`
fuses q, k and v head by head ("per_head": head 0's q, k, v rows, then head 1's...), split on
import and fused on export. The untied output matrix is `embed_out`. Older config.json files
name rotary's settings `rotary_pct` and `rotary_emb_base`, which export writes (every
transformers version reads them); transformers >= 5 files keep them in `rope_parameters`.
"""

from __future__ import annotations

from tformer.pretrained.families.gpt2 import GPT2
from tformer.pretrained.families.record import SIZE_KEYS, Family

_QKV = "{p}layers.{i}.attention.query_key_value"  # each head's q, k, v rows in turn
GPT_NEOX = Family(
    model_types=("gpt_neox",),
    architectures={"GPTNeoXForCausalLM": "lm"},
    bare_architectures=(),
    base_prefix="gpt_neox.",
    fixed={**GPT2.fixed, "positional": "rotary"},  # GPT-2's pre-norm LayerNorm decoder
    config_keys=(
        *SIZE_KEYS,
        ("rope_theta", "rotary_emb_base"),
        ("rotary_fraction", "rotary_pct"),
        ("norm_eps", "layer_norm_eps"),
        ("activation", "hidden_act"),
        ("dropout", "hidden_dropout"),
        ("attention_dropout", "attention_dropout"),
        ("attention_bias", "attention_bias"),
        ("parallel_residual", "use_parallel_residual"),
        ("tie_embeddings", "tie_word_embeddings"),
        ("pad_id", "pad_token_id"),
        ("bos_id", "bos_token_id"),
        ("eos_id", "eos_token_id"),
    ),
    hf_defaults={
        "max_position_embeddings": 2048,
        "rotary_emb_base": 10000.0,
        "rotary_pct": 0.25,
        "layer_norm_eps": 1e-5,
        "hidden_act": "gelu",
        "hidden_dropout": 0.0,
        "attention_dropout": 0.0,
        "attention_bias": True,
        "use_parallel_residual": True,
        "tie_word_embeddings": False,
        "pad_token_id": None,
        "bos_token_id": 0,
        "eos_token_id": 2,
    },
    activations={"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"},
    tensors=(
        ("decoder.embeddings.tokens", "{p}embed_in"),
        ("decoder.blocks.{i}.self_attn_norm", "{p}layers.{i}.input_layernorm"),
        *(
            (f"decoder.blocks.{{i}}.self_attn.{n}", _QKV, f"per_head:{k}")
            for k, n in enumerate(("q_proj", "k_proj", "v_proj"))
        ),
        ("decoder.blocks.{i}.self_attn.out_proj", "{p}layers.{i}.attention.dense"),
        ("decoder.blocks.{i}.ffn_norm", "{p}layers.{i}.post_attention_layernorm"),
        ("decoder.blocks.{i}.ffn.up", "{p}layers.{i}.mlp.dense_h_to_4h"),
        ("decoder.blocks.{i}.ffn.down", "{p}layers.{i}.mlp.dense_4h_to_h"),
        ("decoder.final_norm", "{p}final_layer_norm"),
        ("lm_head.proj.weight", "embed_out.weight"),
    ),
    # causal-mask buffers and rotary tables that older checkpoints saved
    ignored=(r"\.attention\.(masked_)?bias$", r"rotary_emb\.inv_freq$"),
    config_aliases={"rope_theta": "rotary_emb_base", "partial_rotary_factor": "rotary_pct"},
    rope_scalings=(),
)
