"""The record that describes one Hugging Face family as data (`Family`).

A record says which ModelConfig values the family always has (`fixed`), which config.json key
fills each remaining field (`config_keys`), and how every tformer tensor is named in the HF
checkpoint (`tensors`). Supporting a new family means adding a record, not writing a loader.

Tensor names are patterns: `{i}` is a block index, `{s}` is "encoder" or "decoder" (BART
names both stacks alike) and `{p}` is the base-model prefix ("bert.", "transformer.",
"model."), present when the checkpoint is a model-with-head and absent for a bare base model.
A tformer name without ".weight"/".bias" stands for both. The third entry names a transform
from `convert.TRANSFORMS` (GPT-2's Conv1D stores weights transposed; BART keeps two unused
rows at the start of its position table; its logits bias is a (1, V) row), and/or, for an HF
tensor that fuses several tformer ones, "<layout>:<k>": this tensor is part k, laid out as
`convert.SPLITS` says ("concat": Phi-3's qkv_proj and gate_up_proj; "per_head": GPT-NeoX's
query_key_value). GPT-2's c_attn is both: "conv1d+concat:0" for q. The parts' sizes come from
the model (grouped-query k and v are smaller than q), so one rule fits every shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tformer.config import ROPE_SCALINGS

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
    # rules tried before `tensors` when the feed-forward is gated (T5 v1.1 names its two input
    # projections wi_0 and wi_1, v1.0 its one `wi`)
    gated_tensors: tuple[Rule, ...] = ()
    # ModelConfig fields the family needs at least this value of (BERT always has segments)
    at_least: dict[str, int] = field(default_factory=dict)
    # fairseq's learned positions (RoBERTa): position_offset = pad_token_id + 1 table rows come
    # before position 0, and max_position_embeddings counts them (max_seq_len does not)
    positions_after_pad: bool = False
    # HF tensor -> a second name transformers stores the same weight under. Import reads the
    # second where the file has it (an untied RobertaForMaskedLM computes with
    # lm_head.decoder.bias, a tied one with lm_head.bias); export writes both.
    also_stored_as: dict[str, str] = field(default_factory=dict)
    # config.json key that switches the sliding window on (Qwen's use_sliding_window): while
    # it is false, transformers attends to every position whatever sliding_window says
    window_switch: str | None = None
    # config.json key -> the family's older spelling of it, which config_keys name (GPT-NeoX's
    # rotary_pct for partial_rotary_factor); import reads either, export writes the older one
    # (transformers >= 5 reads it too)
    config_aliases: dict[str, str] = field(default_factory=dict)
    # the rope scaling types the family's transformers class computes as tformer does
    rope_scalings: tuple[str, ...] = ROPE_SCALINGS
    # ModelConfig field -> (config.json key, its value -> the field's, the field's -> its
    # value), for a setting config.json holds as another quantity (Gemma's
    # query_pre_attn_scalar s is attention_scale = s ** -0.5)
    converted_keys: dict[str, tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = field(
        default_factory=dict
    )
    # config.json keys whose null is a setting (no window, no soft-cap), not a missing value
    # that `hf_defaults` fills in
    nullable: tuple[str, ...] = ()
    # the HF output projection, where the checkpoint rather than config.json says whether it
    # is tied: stored, it is a matrix of its own (transformers 5 writes tie_word_embeddings=
    # true for every T5 and keeps a stored lm_head.weight apart from the embeddings)
    untied_when_stored: str | None = None


ATTENTION = ("q_proj", "k_proj", "v_proj")  # the HF names most families give q, k, v
# the config.json keys of a model's sizes, as most families since BERT name them
SIZE_KEYS = (
    ("vocab_size", "vocab_size"),
    ("d_model", "hidden_size"),
    ("n_heads", "num_attention_heads"),
    ("n_layers", "num_hidden_layers"),
    ("d_ff", "intermediate_size"),
    ("max_seq_len", "max_position_embeddings"),
)


def classes(prefix: str, heads: dict[str, str]) -> dict[str, str]:
    """HF class names "<prefix><suffix>" -> tformer head, for each suffix of `heads`."""
    return {f"{prefix}{suffix}": head for suffix, head in heads.items()}
