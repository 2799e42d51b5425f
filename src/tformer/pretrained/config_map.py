"""config.json <-> ModelConfig, driven by the `Family` tables.

Import reads each field the family names (with the family's defaults for keys an older
config.json leaves out) and refuses settings tformer does not implement rather than loading a
model that would silently compute something else. Export writes the same keys back.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from tformer.checkpoint import CheckpointError
from tformer.config import ROPE_SCALING_FIELDS, ModelConfig
from tformer.errors import ConfigError, InputError
from tformer.pretrained.families import FAMILIES, Family

CLASSIFICATION_HEADS = ("sequence-classification", "token-classification")
# config.json's `layer_types` names -> ModelConfig.layer_types entries
LAYER_TYPE_NAMES = {"full_attention": "full", "sliding_attention": "sliding"}
# ModelConfig rope field -> its key in config.json's rope table (shared by every rotary family)
ROPE_KEYS = {
    "rope_factor": "factor",
    "rope_low_freq_factor": "low_freq_factor",
    "rope_high_freq_factor": "high_freq_factor",
    "rope_original_max_seq_len": "original_max_position_embeddings",
}


def _normalise(hf: dict[str, Any], family: Family, source: str) -> dict[str, Any]:
    """transformers >= 5 keeps rope settings in `rope_parameters`; older files at top level,
    some under the family's older names (`Family.config_aliases`). For a family that reads
    rope_local_base_freq, a table per block type (Gemma 3's) holds the global blocks'
    settings under full_attention and the local ones' base under sliding_attention, which
    tformer never rescales (ModernBERT reads its two tables itself)."""
    hf = dict(hf)
    rope = hf.get("rope_parameters")
    reads_local_base = "rope_local_base_freq" in dict(family.config_keys).values()
    if isinstance(rope, dict) and "full_attention" in rope and reads_local_base:
        local = rope.get("sliding_attention") or {}
        if local.get("rope_type", "default") != "default":
            raise CheckpointError(
                f"{source}: config.json rescales the local blocks' rotary "
                f"(rope_type {local['rope_type']!r}); tformer rescales only the global ones'"
            )
        hf.setdefault("rope_local_base_freq", local.get("rope_theta"))
        rope = rope["full_attention"]
    if isinstance(rope, dict):
        hf.setdefault("rope_theta", rope.get("rope_theta"))
        hf.setdefault("partial_rotary_factor", rope.get("partial_rotary_factor"))
        if rope.get("rope_type", "default") != "default":
            hf["rope_scaling"] = rope
    for key, older in family.config_aliases.items():
        if hf.get(older) is None:
            hf[older] = hf.get(key)
    if isinstance(hf.get("eos_token_id"), list):  # several stop tokens: the first is "the" eos
        hf["eos_token_id"] = hf["eos_token_id"][0]
    return hf


def _hf_value(hf: dict[str, Any], family: Family, key: str, source: str) -> Any:
    if key in hf and (hf[key] is not None or key in family.nullable):
        return hf[key]
    if key not in family.hf_defaults:
        raise CheckpointError(f"{source}: config.json has no {key!r}, which tformer needs")
    default = family.hf_defaults[key]
    return default(hf) if callable(default) else default


def _check_supported(hf: dict[str, Any], family: Family, source: str) -> None:
    for key, wanted in family.must_be.items():
        if hf.get(key, wanted) != wanted:
            raise CheckpointError(
                f"{source}: config.json has {key}={hf[key]!r}; tformer supports only "
                f"{key}={wanted!r} for model_type={hf['model_type']!r}"
            )
    for a, b in family.same:
        va, vb = _hf_value(hf, family, a, source), _hf_value(hf, family, b, source)
        if va != vb:
            raise CheckpointError(
                f"{source}: config.json has {a}={va!r} but {b}={vb!r}; tformer needs them equal"
            )


def _rope_scaling_fields(hf: dict[str, Any], family: Family, source: str) -> dict[str, Any]:
    """ModelConfig's rope_* fields from config.json's rope table (`rope_parameters` of
    transformers >= 5, `rope_scaling` before; "type" is its older name for "rope_type")."""
    rope = hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return {}
    if kind not in family.rope_scalings:
        raise CheckpointError(
            f"{source}: config.json has rope scaling type {kind!r}, which tformer does not "
            f"implement for {hf['model_type']}; supported: "
            f"{', '.join(family.rope_scalings) or 'none'}"
        )
    # transformers falls back to max_position_embeddings for a llama3 table without it
    rope = {"original_max_position_embeddings": hf.get("max_position_embeddings"), **rope}
    fields: dict[str, Any] = {"rope_scaling": kind}
    for name in ROPE_SCALING_FIELDS[kind]:
        if rope.get(ROPE_KEYS[name]) is None:
            raise CheckpointError(
                f"{source}: config.json's {kind!r} rope scaling has no {ROPE_KEYS[name]!r}"
            )
        fields[name] = rope[ROPE_KEYS[name]]
    return fields


def _local_attention_fields(
    fields: dict[str, Any], hf: dict[str, Any], family: Family, source: str
) -> None:
    """sliding_window and layer_types as transformers applies them, in one canonical form:
    no window (both None) when no block is windowed, so such a model is the plain family's."""
    if family.window_switch is not None and not hf.get(family.window_switch, False):
        fields["sliding_window"] = None
    names = fields.get("layer_types")
    if names is not None:
        unknown = sorted(set(names) - set(LAYER_TYPE_NAMES))
        if unknown:
            raise CheckpointError(
                f"{source}: config.json's layer_types has {', '.join(map(repr, unknown))}; "
                f"tformer implements {', '.join(LAYER_TYPE_NAMES)}"
            )
        fields["layer_types"] = tuple(LAYER_TYPE_NAMES[name] for name in names)
    windowed = fields.get("sliding_window") is not None and "sliding" in (
        fields.get("layer_types") or ()
    )
    if "layer_types" in fields and not windowed:  # every block attends to every position
        fields["layer_types"] = fields["sliding_window"] = None
        fields.pop("rope_local_theta", None)  # the local blocks' base: there are none


def _fairseq_positions(fields: dict[str, Any], source: str) -> dict[str, Any]:
    """position_offset and max_seq_len of a fairseq-style position table (RoBERTa), whose
    first pad_token_id + 1 rows precede position 0 and which max_position_embeddings counts."""
    if fields["pad_id"] is None:  # dropped as outside the vocabulary
        raise CheckpointError(
            f"{source}: positions are numbered by pad_token_id, which has no token"
        )
    offset = fields["pad_id"] + 1
    if fields["max_seq_len"] <= offset:
        raise CheckpointError(
            f"{source}: max_position_embeddings={fields['max_seq_len']} leaves no positions after "
            f"the {offset} rows before position 0 (pad_token_id + 1)"
        )
    return {"position_offset": offset, "max_seq_len": fields["max_seq_len"] - offset}


def _drop_ids_outside_vocabulary(fields: dict[str, Any], source: str) -> None:
    """transformers only warns about special-token ids the vocabulary lacks (tiny test models
    copy GPT-2's 50256), so tformer warns and forgets them rather than refusing the model."""
    names = ("pad_id", "bos_id", "eos_id", "decoder_start_id")
    foreign = [
        n for n in names if fields.get(n) is not None and not 0 <= fields[n] < fields["vocab_size"]
    ]
    if foreign:
        listed = ", ".join(f"{n}={fields[n]}" for n in foreign)
        warnings.warn(
            f"{source}: {listed} outside the vocabulary of {fields['vocab_size']}; ignored",
            stacklevel=4,
        )
        fields.update(dict.fromkeys(foreign))


def model_config_from_hf(
    hf: dict[str, Any], family: Family, architecture: str, source: str
) -> ModelConfig:
    """ModelConfig for a config.json of `family` whose model class is `architecture`."""
    hf = _normalise(hf, family, source)
    _check_supported(hf, family, source)
    fields: dict[str, Any] = dict(family.fixed)
    for name, key in family.config_keys:
        fields[name] = _hf_value(hf, family, key, source)
    for name, (key, read, _) in family.converted_keys.items():
        fields[name] = read(_hf_value(hf, family, key, source))
    activation = fields["activation"]
    if activation not in family.activations:
        raise CheckpointError(
            f"{source}: activation {activation!r} is not supported for {hf['model_type']}; "
            f"supported: {', '.join(family.activations)}"
        )
    fields["activation"] = family.activations[activation]
    if fields["positional"] == "rotary":
        fields.update(_rope_scaling_fields(hf, family, source))
    _local_attention_fields(fields, hf, family, source)
    fields["head"] = family.architectures[architecture]
    if fields["head"] in CLASSIFICATION_HEADS:
        count = hf.get("num_labels", 2)
        # config.json's keys are strings ("0"), a dict built in memory may have ints
        labels = {int(i): name for i, name in (hf.get("id2label") or {}).items()}
        labels = labels or {i: f"LABEL_{i}" for i in range(count)}
        fields["labels"] = tuple(labels[i] for i in range(len(labels)))
        fields["n_labels"] = len(labels)
        # a family's own pooler setting (ModernBERT's head transforms tokens too), else
        # BERT's rule: a pooler before sequence classification only
        fields.setdefault("pooler", fields["head"] == "sequence-classification")
    _drop_ids_outside_vocabulary(fields, source)
    if family.positions_after_pad:
        fields.update(_fairseq_positions(fields, source))
    try:
        return ModelConfig(**fields)
    except ConfigError as error:
        raise CheckpointError(f"{source}: config.json gives an invalid model: {error}") from error


def architecture_for(hf: dict[str, Any], family: Family, source: str) -> str:
    """The model class config.json names (its first `architectures` entry)."""
    names = hf.get("architectures") or [next(iter(family.architectures))]
    if names[0] not in family.architectures:
        raise CheckpointError(
            f"{source}: architecture {names[0]!r} is not supported; supported "
            f"{family.model_types[0]} classes: {', '.join(family.architectures)}"
        )
    return names[0]


# Fields that do not change what a model computes at inference: export may drop them.
NOT_COMPUTED = ("dropout", "attention_dropout", "init_std", "labels",
                "pad_id", "bos_id", "eos_id", "mask_id", "decoder_start_id")  # fmt: skip
# Fields with two spellings of one value (None = "the default"): compare the derived value.
DERIVED = {
    "head": "task_head",
    "n_kv_heads": "kv_heads",
    "head_dim": "attention_head_dim",
    "attention_bias": "use_attention_bias",
    "qkv_bias": "use_qkv_bias",
    "head_bias": "use_head_bias",
    "final_norm": "use_final_norm",
    "n_encoder_layers": "encoder_layers",
    "n_decoder_layers": "decoder_layers",
    "attention_scale": "attention_logit_scale",
    "rope_local_theta": "local_rope_theta",
}


def _relevant(name: str, config: ModelConfig) -> bool:
    if name in NOT_COMPUTED:
        return False
    if name in ("pooling", "pooler", "pooler_activation", "pooler_norm", "n_labels"):
        return config.task_head in CLASSIFICATION_HEADS
    return name != "rope_theta" or config.positional == "rotary"


def _lost_in_export(config: ModelConfig, family: Family, architecture: str) -> list[str]:
    """Settings of `config` that the family's config.json cannot express (read it back and
    compare), so that export refuses a model transformers would compute differently."""
    hf = hf_config_from_model(config, family, architecture)
    back = model_config_from_hf(hf, family, architecture, "export")
    return [
        f"{f.name}={getattr(config, f.name)!r}"
        for f in dataclasses.fields(config)
        if _relevant(f.name, config)
        and getattr(config, DERIVED.get(f.name, f.name))
        != getattr(back, DERIVED.get(f.name, f.name))
    ]


def family_for_config(config: ModelConfig) -> tuple[Family, str]:
    """The HF family and model class that can hold a tformer model with this config."""
    reasons = []
    for family in FAMILIES:
        differs = [
            f"{k}={getattr(config, k)!r} (needs {v!r})"
            for k, v in family.fixed.items()
            if _relevant(k, config) and getattr(config, k) != v
        ]
        differs += [
            f"{k}={getattr(config, k)!r} (needs >= {v})"
            for k, v in family.at_least.items()
            if getattr(config, k) < v
        ]
        if config.rope_scaling is not None and config.rope_scaling not in family.rope_scalings:
            differs.append(f"rope_scaling={config.rope_scaling!r}")
        if config.activation not in family.activations.values():
            differs.append(f"activation={config.activation!r}")
        architecture = next(
            (a for a, h in family.architectures.items() if h == config.task_head), None
        )
        if architecture is None:
            differs.append(f"head={config.task_head!r}")
        if not differs and architecture is not None:
            differs = _lost_in_export(config, family, architecture)
            if not differs:
                return family, architecture
        reasons.append(f"{family.model_types[0]}: {', '.join(differs)}")
    raise InputError(
        "no Hugging Face family can hold this model; it differs from\n  " + "\n  ".join(reasons)
    )


def hf_config_from_model(config: ModelConfig, family: Family, architecture: str) -> dict[str, Any]:
    """config.json contents for `config` saved as `architecture` of `family`."""
    hf: dict[str, Any] = {"model_type": family.model_types[0], "architectures": [architecture]}
    keys = dict(family.config_keys)
    for name, key in family.config_keys:
        # the derived value: a family's own default for an omitted setting may differ from
        # tformer's (Qwen3's head_dim is 128, not hidden_size / heads)
        hf[key] = getattr(config, DERIVED.get(name, name))
    if family.positions_after_pad:  # the table's rows, those before position 0 included
        hf[keys["max_seq_len"]] = config.max_seq_len + config.position_offset
    if config.attention_dropout is None and "attention_dropout" in keys:
        hf[keys["attention_dropout"]] = config.dropout
    hf[keys["activation"]] = next(
        k for k, v in family.activations.items() if v == config.activation
    )
    for a, b in family.same:
        hf[b] = hf[a]
    hf.update(family.must_be)
    for name, (key, _, write) in family.converted_keys.items():
        hf[key] = write(getattr(config, DERIVED.get(name, name)))
    if "layer_types" in keys:  # every block's, so that no family default applies
        hf[keys["layer_types"]] = [
            next(name for name, ours in LAYER_TYPE_NAMES.items() if ours == kind)
            for kind in config.block_types(config.n_layers)
        ]
    if family.window_switch is not None:
        hf[family.window_switch] = config.sliding_window is not None
    if config.rope_scaling is not None:  # transformers reads this older key as rope_parameters
        hf["rope_scaling"] = {
            "rope_type": config.rope_scaling,
            **{ROPE_KEYS[n]: getattr(config, n) for n in ROPE_SCALING_FIELDS[config.rope_scaling]},
        }
    if config.task_head in CLASSIFICATION_HEADS:
        labels = config.labels or tuple(f"LABEL_{i}" for i in range(config.n_labels))
        hf["id2label"] = dict(enumerate(labels))
        hf["label2id"] = {label: i for i, label in enumerate(labels)}
    return hf
