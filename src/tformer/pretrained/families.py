"""The Hugging Face families tformer reads and writes, as data: one `Family` record each.

A record says which ModelConfig values the family always has (`fixed`), which config.json key
fills each remaining field (`config_keys`), and how every tformer tensor is named in the HF
checkpoint (`tensors`). Supporting a new family means adding a record, not writing a loader.

Tensor names are patterns: `{i}` is a block index, `{s}` is "encoder" or "decoder" (BART
names both stacks alike) and `{p}` is the base-model prefix ("bert.", "transformer.",
"model."), present when the checkpoint is a model-with-head and absent for a bare base model.
A tformer name without ".weight"/".bias" stands for both. The third entry names a transform
from `convert.TRANSFORMS` (GPT-2's Conv1D stores weights transposed and fuses q, k, v; BART
keeps two unused rows at the start of its position table; its logits bias is a (1, V) row).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tformer.checkpoint import CheckpointError

Rule = tuple[str, str] | tuple[str, str, str]


@dataclass(frozen=True)
class Family:
    """How one Hugging Face `model_type` maps onto ModelConfig and tformer's tensors."""

    model_types: tuple[str, ...]
    # HF class name -> tformer task head; the first class per head is the one export writes.
    architectures: dict[str, str]
    bare_architectures: tuple[str, ...]  # classes whose tensors carry no base prefix
    base_prefix: str
    fixed: dict[str, Any]  # ModelConfig fields with the same value for the whole family
    config_keys: tuple[tuple[str, str], ...]  # (ModelConfig field, config.json key)
    hf_defaults: dict[str, Any | Callable[[dict[str, Any]], Any]]  # for keys config.json omits
    activations: dict[str, str]  # config.json activation name -> ModelConfig.activation
    tensors: tuple[Rule, ...]
    ignored: tuple[str, ...] = ()  # regexes of HF tensors that carry nothing tformer uses
    must_be: dict[str, Any] = field(default_factory=dict)  # config.json values tformer needs
    same: tuple[tuple[str, str], ...] = ()  # config.json keys that must be equal
    # task head -> rules tried before `tensors` for that head alone (RoBERTa's sequence
    # classifier is classifier.dense + classifier.out_proj, its token classifier `classifier`)
    head_tensors: dict[str, tuple[Rule, ...]] = field(default_factory=dict)
    # ModelConfig fields the family needs at least this value of (BERT always has segments)
    at_least: dict[str, int] = field(default_factory=dict)
    # fairseq's learned positions (RoBERTa): position_offset = pad_token_id + 1 table rows come
    # before position 0, and max_position_embeddings counts them (max_seq_len does not)
    positions_after_pad: bool = False
    # HF tensor -> a second name transformers stores the same weight under. Import reads the
    # second where the file has it (an untied RobertaForMaskedLM computes with
    # lm_head.decoder.bias, a tied one with lm_head.bias); export writes both.
    also_stored_as: dict[str, str] = field(default_factory=dict)


_ATTENTION = ("q_proj", "k_proj", "v_proj")

_POST_NORM_ENCODER = {
    "arch": "encoder",
    "positional": "learned",
    "norm": "layernorm",
    "norm_position": "post",
    "embedding_norm": True,
    "bias": True,
}
# config.json keys of BERT and the families that kept its BertConfig (RoBERTa, XLM-R)
_BERT_KEYS = (
    ("vocab_size", "vocab_size"),
    ("d_model", "hidden_size"),
    ("n_heads", "num_attention_heads"),
    ("n_layers", "num_hidden_layers"),
    ("d_ff", "intermediate_size"),
    ("max_seq_len", "max_position_embeddings"),
    ("type_vocab_size", "type_vocab_size"),
    ("norm_eps", "layer_norm_eps"),
    ("activation", "hidden_act"),
    ("dropout", "hidden_dropout_prob"),
    ("attention_dropout", "attention_probs_dropout_prob"),
    ("tie_embeddings", "tie_word_embeddings"),
    ("pad_id", "pad_token_id"),
)
_BERT_DEFAULTS = {
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "tie_word_embeddings": True,
    "pad_token_id": 0,
}
_BERT_ENCODER_TENSORS = (
    ("encoder.embeddings.tokens", "{p}embeddings.word_embeddings"),
    ("encoder.embeddings.positions", "{p}embeddings.position_embeddings"),
    ("encoder.embeddings.segments", "{p}embeddings.token_type_embeddings"),
    ("encoder.embeddings.norm", "{p}embeddings.LayerNorm"),
    ("encoder.blocks.{i}.self_attn.q_proj", "{p}encoder.layer.{i}.attention.self.query"),
    ("encoder.blocks.{i}.self_attn.k_proj", "{p}encoder.layer.{i}.attention.self.key"),
    ("encoder.blocks.{i}.self_attn.v_proj", "{p}encoder.layer.{i}.attention.self.value"),
    ("encoder.blocks.{i}.self_attn.out_proj", "{p}encoder.layer.{i}.attention.output.dense"),
    ("encoder.blocks.{i}.self_attn_norm", "{p}encoder.layer.{i}.attention.output.LayerNorm"),
    ("encoder.blocks.{i}.ffn.up", "{p}encoder.layer.{i}.intermediate.dense"),
    ("encoder.blocks.{i}.ffn.down", "{p}encoder.layer.{i}.output.dense"),
    ("encoder.blocks.{i}.ffn_norm", "{p}encoder.layer.{i}.output.LayerNorm"),
)
# older config.json files name the position scheme; transformers >= 5 has only "absolute"
_BERT_MUST_BE = {"position_embedding_type": "absolute", "is_decoder": False}


def _classes(prefix: str, heads: dict[str, str]) -> dict[str, str]:
    """HF class names "<prefix><suffix>" -> tformer head, for each suffix of `heads`."""
    return {f"{prefix}{suffix}": head for suffix, head in heads.items()}


_ENCODER_HEADS = {
    "ForMaskedLM": "masked-lm",
    "Model": "embedding",
    "ForSequenceClassification": "sequence-classification",
    "ForTokenClassification": "token-classification",
}

BERT = Family(
    model_types=("bert",),
    architectures={**_classes("Bert", _ENCODER_HEADS), "BertForPreTraining": "masked-lm"},
    bare_architectures=("BertModel",),
    base_prefix="bert.",
    fixed=_POST_NORM_ENCODER,
    config_keys=_BERT_KEYS,
    hf_defaults=_BERT_DEFAULTS,
    activations={"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh"},
    tensors=(
        *_BERT_ENCODER_TENSORS,
        ("head.transform", "cls.predictions.transform.dense"),
        ("head.norm", "cls.predictions.transform.LayerNorm"),
        ("head.proj.weight", "cls.predictions.decoder.weight"),
        ("head.proj.bias", "cls.predictions.bias"),
        ("head.pooler", "{p}pooler.dense"),
        ("head.classifier", "classifier"),
    ),
    ignored=(
        r"position_ids$",
        r"pooler\.dense\.",
        r"cls\.seq_relationship\.",
        r"cls\.predictions\.decoder\.bias$",
    ),
    must_be=_BERT_MUST_BE,
    at_least={"type_vocab_size": 1},
)

GPT2 = Family(
    model_types=("gpt2",),
    architectures={"GPT2LMHeadModel": "lm", "GPT2Model": "lm"},
    bare_architectures=("GPT2Model",),
    base_prefix="transformer.",
    fixed={
        "arch": "decoder",
        "positional": "learned",
        "norm": "layernorm",
        "norm_position": "pre",
        "embedding_norm": False,
        "bias": True,
    },
    config_keys=(
        ("vocab_size", "vocab_size"),
        ("d_model", "n_embd"),
        ("n_heads", "n_head"),
        ("n_layers", "n_layer"),
        ("d_ff", "n_inner"),
        ("max_seq_len", "n_positions"),
        ("norm_eps", "layer_norm_epsilon"),
        ("activation", "activation_function"),
        ("dropout", "resid_pdrop"),
        ("attention_dropout", "attn_pdrop"),
        ("tie_embeddings", "tie_word_embeddings"),
        ("pad_id", "pad_token_id"),
        ("bos_id", "bos_token_id"),
        ("eos_id", "eos_token_id"),
    ),
    hf_defaults={
        "n_inner": lambda hf: 4 * hf["n_embd"],
        "n_positions": 1024,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        "resid_pdrop": 0.1,
        "attn_pdrop": 0.1,
        "tie_word_embeddings": True,
        "pad_token_id": None,
        "bos_token_id": None,
        "eos_token_id": None,
    },
    activations={"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"},
    tensors=(
        ("decoder.embeddings.tokens", "{p}wte"),
        ("decoder.embeddings.positions", "{p}wpe"),
        ("decoder.blocks.{i}.self_attn_norm", "{p}h.{i}.ln_1"),
        ("decoder.blocks.{i}.self_attn.q_proj", "{p}h.{i}.attn.c_attn", "qkv:0"),
        ("decoder.blocks.{i}.self_attn.k_proj", "{p}h.{i}.attn.c_attn", "qkv:1"),
        ("decoder.blocks.{i}.self_attn.v_proj", "{p}h.{i}.attn.c_attn", "qkv:2"),
        ("decoder.blocks.{i}.self_attn.out_proj", "{p}h.{i}.attn.c_proj", "conv1d"),
        ("decoder.blocks.{i}.ffn_norm", "{p}h.{i}.ln_2"),
        ("decoder.blocks.{i}.ffn.up", "{p}h.{i}.mlp.c_fc", "conv1d"),
        ("decoder.blocks.{i}.ffn.down", "{p}h.{i}.mlp.c_proj", "conv1d"),
        ("decoder.final_norm", "{p}ln_f"),
        ("lm_head.proj.weight", "lm_head.weight"),
    ),
    ignored=(r"\.attn\.(masked_)?bias$",),
    must_be={"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False},
)

_ROTARY_DECODER = {
    "arch": "decoder",
    "positional": "rotary",
    "norm": "rmsnorm",
    "norm_position": "pre",
    "embedding_norm": False,
    "dropout": 0.0,
    "sliding_window": None,  # Mistral's own field (MISTRAL below)
}
# config.json keys the Llama-derived families share (their differences are in `fixed`)
_ROTARY_KEYS = (
    ("vocab_size", "vocab_size"),
    ("d_model", "hidden_size"),
    ("n_heads", "num_attention_heads"),
    ("n_kv_heads", "num_key_value_heads"),
    ("head_dim", "head_dim"),
    ("n_layers", "num_hidden_layers"),
    ("d_ff", "intermediate_size"),
    ("max_seq_len", "max_position_embeddings"),
    ("rope_theta", "rope_theta"),
    ("norm_eps", "rms_norm_eps"),
    ("activation", "hidden_act"),
    ("attention_dropout", "attention_dropout"),
    ("tie_embeddings", "tie_word_embeddings"),
    ("pad_id", "pad_token_id"),
    ("bos_id", "bos_token_id"),
    ("eos_id", "eos_token_id"),
)
_ROTARY_DEFAULTS = {
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
_GATED = {"silu": "swiglu", "gelu": "geglu"}  # the Llama-derived MLPs are always gated
_ROTARY_TENSORS = (
    ("decoder.embeddings.tokens", "{p}embed_tokens"),
    ("decoder.blocks.{i}.self_attn_norm", "{p}layers.{i}.input_layernorm"),
    *(
        (f"decoder.blocks.{{i}}.self_attn.{n}", f"{{p}}layers.{{i}}.self_attn.{n}")
        for n in (*_ATTENTION, "q_norm", "k_norm")
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
    fixed=_ROTARY_DECODER,
    config_keys=(
        *_ROTARY_KEYS,
        ("attention_bias", "attention_bias"),
        ("bias", "mlp_bias"),
    ),
    hf_defaults={**_ROTARY_DEFAULTS, "attention_bias": False, "mlp_bias": False},
    activations=_GATED,
    tensors=_ROTARY_TENSORS,
    ignored=(r"rotary_emb\.inv_freq$",),
    must_be={"pretraining_tp": 1},
)

# Mistral: Llama's layers without biases, and sliding-window attention (each position sees
# the last `sliding_window` positions; HF's default window is 4096, null turns it off).
_MISTRAL_FIXED = {k: v for k, v in _ROTARY_DECODER.items() if k != "sliding_window"}
_MISTRAL_FIXED["bias"] = False
MISTRAL = Family(
    model_types=("mistral",),
    architectures={"MistralForCausalLM": "lm"},
    bare_architectures=(),
    base_prefix="model.",
    fixed=_MISTRAL_FIXED,
    config_keys=(*_ROTARY_KEYS, ("sliding_window", "sliding_window")),
    hf_defaults={**_ROTARY_DEFAULTS, "sliding_window": 4096},
    activations=_GATED,
    tensors=_ROTARY_TENSORS,
    ignored=(r"rotary_emb\.inv_freq$",),
)

# Qwen2 / Qwen2.5: Llama with biases on q, k and v only. A sliding window is off unless
# `use_sliding_window` turns it on (config.json may name a window it does not use).
QWEN2 = Family(
    model_types=("qwen2",),
    architectures={"Qwen2ForCausalLM": "lm"},
    bare_architectures=(),
    base_prefix="model.",
    fixed={**_ROTARY_DECODER, "bias": False, "qkv_bias": True},
    config_keys=_ROTARY_KEYS,
    hf_defaults={**_ROTARY_DEFAULTS, "max_position_embeddings": 32768},
    activations=_GATED,
    tensors=_ROTARY_TENSORS,
    ignored=(r"rotary_emb\.inv_freq$",),
    must_be={"use_sliding_window": False},
)

# Qwen3: RMSNorm over each head's queries and keys; head_dim is its own setting (128 unless
# config.json says otherwise, not hidden_size / heads); `attention_bias` covers all four
# attention projections, the MLP never has biases.
QWEN3 = Family(
    model_types=("qwen3",),
    architectures={"Qwen3ForCausalLM": "lm"},
    bare_architectures=(),
    base_prefix="model.",
    fixed={**_ROTARY_DECODER, "bias": False, "qk_norm": True},
    config_keys=(*_ROTARY_KEYS, ("attention_bias", "attention_bias")),
    hf_defaults={
        **_ROTARY_DEFAULTS,
        "head_dim": 128,
        "max_position_embeddings": 32768,
        "attention_bias": False,
    },
    activations=_GATED,
    tensors=_ROTARY_TENSORS,
    ignored=(r"rotary_emb\.inv_freq$",),
    must_be={"use_sliding_window": False},
)

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
            for n in (*_ATTENTION, "out_proj")
        ),
        *(
            (f"decoder.blocks.{{i}}.cross_attn.{n}", f"{{p}}decoder.layers.{{i}}.encoder_attn.{n}")
            for n in (*_ATTENTION, "out_proj")
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

# RoBERTa and XLM-R (one architecture, two vocabularies): BERT's encoder and config.json
# with fairseq's positions -- counted over non-pad tokens from pad_token_id + 1 (row
# pad_token_id for padding) -- and no pooler before its classifier, whose dense + tanh +
# out_proj is BERT's pooler + classifier under other names. Its MLM head applies GELU
# whatever hidden_act says, hence GELU only.
ROBERTA = Family(
    model_types=("roberta", "xlm-roberta"),
    architectures={**_classes("Roberta", _ENCODER_HEADS), **_classes("XLMRoberta", _ENCODER_HEADS)},
    bare_architectures=("RobertaModel", "XLMRobertaModel"),
    base_prefix="roberta.",
    fixed={**_POST_NORM_ENCODER, "positions_skip_padding": True},
    config_keys=_BERT_KEYS,
    hf_defaults={**_BERT_DEFAULTS, "pad_token_id": 1},
    activations={"gelu": "gelu"},
    tensors=(
        *_BERT_ENCODER_TENSORS,
        ("head.transform", "lm_head.dense"),
        ("head.norm", "lm_head.layer_norm"),
        ("head.proj.weight", "lm_head.decoder.weight"),
        ("head.proj.bias", "lm_head.bias"),
        ("head.classifier", "classifier"),
    ),
    ignored=(r"position_ids$", r"pooler\.dense\."),
    must_be=_BERT_MUST_BE,
    head_tensors={
        "sequence-classification": (
            ("head.pooler", "classifier.dense"),
            ("head.classifier", "classifier.out_proj"),
        ),
    },
    at_least={"type_vocab_size": 1},
    positions_after_pad=True,
    also_stored_as={"lm_head.bias": "lm_head.decoder.bias"},
)

# DistilBERT: BERT's post-norm encoder under other names, without segment embeddings, with
# LayerNorm eps fixed at 1e-12 and ReLU (not tanh) after the classifier's pre_classifier.
DISTILBERT = Family(
    model_types=("distilbert",),
    architectures=_classes("DistilBert", _ENCODER_HEADS),
    bare_architectures=("DistilBertModel",),
    base_prefix="distilbert.",
    fixed={
        **_POST_NORM_ENCODER,
        "type_vocab_size": 0,
        "norm_eps": 1e-12,
        "pooler_activation": "relu",
    },
    config_keys=(
        ("vocab_size", "vocab_size"),
        ("d_model", "dim"),
        ("n_heads", "n_heads"),
        ("n_layers", "n_layers"),
        ("d_ff", "hidden_dim"),
        ("max_seq_len", "max_position_embeddings"),
        ("activation", "activation"),
        ("dropout", "dropout"),
        ("attention_dropout", "attention_dropout"),
        ("tie_embeddings", "tie_word_embeddings"),
        ("pad_id", "pad_token_id"),
    ),
    hf_defaults={
        "max_position_embeddings": 512,
        "hidden_dim": 3072,  # DistilBertConfig's default, whatever `dim` is
        "activation": "gelu",
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "tie_word_embeddings": True,
        "pad_token_id": 0,
    },
    activations={"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh"},
    tensors=(
        ("encoder.embeddings.tokens", "{p}embeddings.word_embeddings"),
        ("encoder.embeddings.positions", "{p}embeddings.position_embeddings"),
        ("encoder.embeddings.norm", "{p}embeddings.LayerNorm"),
        *(
            (
                f"encoder.blocks.{{i}}.self_attn.{n}_proj",
                f"{{p}}transformer.layer.{{i}}.attention.{n}_lin",
            )
            for n in ("q", "k", "v", "out")
        ),
        ("encoder.blocks.{i}.self_attn_norm", "{p}transformer.layer.{i}.sa_layer_norm"),
        ("encoder.blocks.{i}.ffn.up", "{p}transformer.layer.{i}.ffn.lin1"),
        ("encoder.blocks.{i}.ffn.down", "{p}transformer.layer.{i}.ffn.lin2"),
        ("encoder.blocks.{i}.ffn_norm", "{p}transformer.layer.{i}.output_layer_norm"),
        ("head.transform", "vocab_transform"),
        ("head.norm", "vocab_layer_norm"),
        ("head.proj", "vocab_projector"),
        ("head.pooler", "pre_classifier"),
        ("head.classifier", "classifier"),
    ),
    ignored=(r"position_ids$",),
    # a sinusoidal table would be read as a learned one: untested, so refused
    must_be={"sinusoidal_pos_embds": False},
)

FAMILIES = (BERT, GPT2, LLAMA, MISTRAL, QWEN2, QWEN3, BART, ROBERTA, DISTILBERT)


def family_for(model_type: str) -> Family:
    """The family that reads config.json's `model_type`, or a CheckpointError listing them all."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise CheckpointError(f"unknown architecture model_type={model_type!r}; supported: {supported}")
