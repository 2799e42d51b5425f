"""BERT and the encoders that kept its layout: RoBERTa / XLM-RoBERTa, DistilBERT."""

from __future__ import annotations

from tformer.pretrained.families.record import SIZE_KEYS, Family, classes

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
    *SIZE_KEYS,
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


_ENCODER_HEADS = {
    "ForMaskedLM": "masked-lm",
    "Model": "embedding",
    "ForSequenceClassification": "sequence-classification",
    "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering",
}
# every *ForQuestionAnswering of these families names its start/end projection alike
_SPAN_HEAD = {"question-answering": (("head.classifier", "qa_outputs"),)}

BERT = Family(
    model_types=("bert",),
    architectures={**classes("Bert", _ENCODER_HEADS), "BertForPreTraining": "masked-lm"},
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
    head_tensors=_SPAN_HEAD,
    at_least={"type_vocab_size": 1},
)


# RoBERTa and XLM-R (one architecture, two vocabularies): BERT's encoder and config.json
# with fairseq's positions -- counted over non-pad tokens from pad_token_id + 1 (row
# pad_token_id for padding) -- and no pooler before its classifier, whose dense + tanh +
# out_proj is BERT's pooler + classifier under other names. Its MLM head applies GELU
# whatever hidden_act says, hence GELU only.
ROBERTA = Family(
    model_types=("roberta", "xlm-roberta"),
    architectures={**classes("Roberta", _ENCODER_HEADS), **classes("XLMRoberta", _ENCODER_HEADS)},
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
        **_SPAN_HEAD,
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
    architectures=classes("DistilBert", _ENCODER_HEADS),
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
    head_tensors=_SPAN_HEAD,
    # a sinusoidal table would be read as a learned one: untested, so refused
    must_be={"sinusoidal_pos_embds": False},
)
