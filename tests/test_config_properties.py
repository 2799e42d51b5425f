"""Property tests: random valid ModelConfig / GenerationConfig values construct; random invalid
ones (wrong types, out-of-range numbers, unknown choices) raise ConfigError and nothing else.

The type oracle here reads each field's annotation as written (`"int | None"`), independently
of the library's checker, so a checker that let a wrong type through would be caught.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tformer.config import (
    ACTIVATIONS,
    ARCHS,
    HEADS_BY_ARCH,
    NORM_POSITIONS,
    NORMS,
    POOLER_ACTIVATIONS,
    POOLINGS,
    POSITIONALS,
    ModelConfig,
)
from tformer.errors import ConfigError
from tformer.generation.config import GenerationConfig

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_INTS = st.integers(-1_000, 1_000_000)
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    SMALL_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _type_ok(value: object, annotation: str) -> bool:
    """Whether `value` fits an annotation string such as "int | None" or "tuple[str, ...]"."""
    for option in annotation.split(" | "):
        if option == "None" and value is None:
            return True
        if option == "bool" and type(value) is bool:
            return True
        if option == "int" and type(value) is int:
            return True
        if option == "float" and type(value) in (int, float):
            return True
        if option == "str" and type(value) is str:
            return True
        if option.startswith("tuple[") and isinstance(value, (list, tuple)):
            item = option.removeprefix("tuple[").removesuffix(", ...]")
            if all(_type_ok(v, item) for v in value):
                return True
    return False


def _annotations(cls: type) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls)}


# ---- ModelConfig ----------------------------------------------------------------------------
def _rope_scaling_fields(positional: str) -> st.SearchStrategy[dict[str, Any]]:
    """No scaling, or (rotary only) a linear or llama3 one with the fields it reads."""
    if positional != "rotary":
        return st.just({})
    linear = st.fixed_dictionaries(
        {"rope_scaling": st.just("linear"), "rope_factor": st.floats(1.0, 64.0)}
    )
    llama3 = st.fixed_dictionaries(
        {
            "rope_scaling": st.just("llama3"),
            "rope_factor": st.floats(1.0, 64.0),
            "rope_low_freq_factor": st.floats(0.1, 2.0),
            "rope_high_freq_factor": st.floats(2.5, 8.0),
            "rope_original_max_seq_len": st.integers(1, 8192),
        }
    )
    return st.just({}) | linear | llama3


@st.composite
def valid_model_fields(draw: st.DrawFn) -> dict[str, Any]:
    arch = draw(st.sampled_from(ARCHS))
    kv_heads = draw(st.integers(1, 4))
    n_heads = kv_heads * draw(st.integers(1, 3))
    head_dim = 2 * draw(st.integers(1, 8))
    vocab_size = draw(st.integers(2, 5000))
    token_id = st.one_of(st.none(), st.integers(0, vocab_size - 1))
    n_labels = draw(st.integers(1, 5))
    positional = draw(st.sampled_from(POSITIONALS))
    pad_id = draw(token_id)
    offset = draw(st.integers(0, 3)) if positional == "learned" else 0
    fairseq = arch == "encoder" and offset >= 1 and pad_id is not None  # RoBERTa's positions
    return {
        **draw(_rope_scaling_fields(positional)),
        "arch": arch,
        "vocab_size": vocab_size,
        "d_model": n_heads * head_dim,
        "n_heads": n_heads,
        "n_kv_heads": draw(st.sampled_from([None, kv_heads])),
        "n_layers": draw(st.integers(1, 4)),
        "d_ff": draw(st.integers(1, 256)),
        "max_seq_len": draw(st.integers(1, 4096)),
        "positional": positional,
        "rope_theta": draw(st.floats(1.0, 1e6) | st.integers(1, 10**6)),
        "norm": draw(st.sampled_from(NORMS)),
        "norm_eps": draw(st.floats(1e-12, 1e-2)),
        "norm_position": draw(st.sampled_from(NORM_POSITIONS)),
        "final_norm": draw(st.sampled_from([None, True, False])),
        "activation": draw(st.sampled_from(ACTIVATIONS)),
        "dropout": draw(st.floats(0.0, 0.99)),
        "attention_dropout": draw(st.none() | st.floats(0.0, 0.99)),
        "bias": draw(st.booleans()),
        "attention_bias": draw(st.none() | st.booleans()),
        "qkv_bias": draw(st.none() | st.booleans()),
        "qk_norm": draw(st.booleans()),
        "type_vocab_size": draw(st.integers(0, 4)),
        "head": draw(st.none() | st.sampled_from(HEADS_BY_ARCH[arch])),
        "n_labels": n_labels,
        "labels": draw(st.none() | st.just([f"label{i}" for i in range(n_labels)])),
        "pooling": draw(st.sampled_from(POOLINGS)),
        "pooler_activation": draw(st.sampled_from(POOLER_ACTIVATIONS)),
        "position_offset": offset,
        "positions_skip_padding": draw(st.booleans()) if fairseq else False,
        "pad_id": pad_id,
        "bos_id": draw(token_id),
        "eos_id": draw(token_id),
    }


POSITIVE_INTS = ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_seq_len", "n_labels")
LLAMA3_ROPE = {"positional": "rotary", "rope_scaling": "llama3", "rope_original_max_seq_len": 64}
CHOICES = {
    "arch": ARCHS,
    "positional": POSITIONALS,
    "norm": NORMS,
    "norm_position": NORM_POSITIONS,
    "activation": ACTIVATIONS,
    "pooling": POOLINGS,
    "pooler_activation": POOLER_ACTIVATIONS,
}


@st.composite
def out_of_range_model_change(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["positive", "eps", "dropout", "choice", "token_id", "rope"]))
    if kind == "positive":
        return {draw(st.sampled_from(POSITIVE_INTS)): draw(st.integers(-1000, 0))}
    if kind == "eps":
        return {draw(st.sampled_from(["norm_eps", "rope_theta"])): draw(st.floats(max_value=0))}
    if kind == "dropout":
        bad = st.floats(allow_nan=True).filter(lambda p: not 0 <= p < 1)
        return {draw(st.sampled_from(["dropout", "attention_dropout"])): draw(bad)}
    if kind == "choice":
        name = draw(st.sampled_from(sorted(CHOICES)))
        return {name: draw(st.text(max_size=10).filter(lambda v: v not in CHOICES[name]))}
    if kind == "rope":
        name = draw(
            st.sampled_from(["rope_factor", "rope_low_freq_factor", "rope_original_max_seq_len"])
        )
        return {**LLAMA3_ROPE, name: draw(st.integers(-1000, 0))}
    name = draw(st.sampled_from(["pad_id", "bos_id", "eos_id", "mask_id", "decoder_start_id"]))
    return {"vocab_size": 100, name: draw(st.integers(-1000, -1) | st.integers(100, 10_000))}


@FAST
@given(valid_model_fields())
def test_random_valid_model_configs_construct_and_round_trip(fields: dict[str, Any]) -> None:
    config = ModelConfig(**fields)
    assert ModelConfig.from_dict(config.to_dict()) == config


@FAST
@given(st.dictionaries(st.sampled_from(sorted(_annotations(ModelConfig))), ANY_VALUE))
def test_any_model_values_construct_or_raise_config_error(values: dict[str, Any]) -> None:
    """Whatever a recipe holds, the only failure is the user-error type."""
    with contextlib.suppress(ConfigError):
        ModelConfig(**values)


# ---- GenerationConfig -----------------------------------------------------------------------
@st.composite
def valid_generation_fields(draw: st.DrawFn) -> dict[str, Any]:
    num_beams = draw(st.integers(1, 4))
    do_sample = draw(st.sampled_from([None, True, False] if num_beams == 1 else [None, False]))
    sampling = num_beams == 1 and do_sample is not False  # sampling options are allowed

    def option(values: st.SearchStrategy[Any]) -> Any:
        return draw(st.none() | values) if sampling else None

    return {
        "max_new_tokens": draw(st.integers(1, 512)),
        "do_sample": do_sample,
        "temperature": option(st.floats(1e-3, 10.0)),
        "top_k": option(st.integers(1, 100)),
        "top_p": option(st.floats(1e-3, 1.0)),
        "min_p": option(st.floats(0.0, 1.0)),
        "repetition_penalty": draw(st.floats(0.1, 3.0)),
        "eos_token_ids": draw(st.lists(st.integers(0, 100), max_size=3)),
        "stop_strings": draw(st.lists(st.text(min_size=1, max_size=4), max_size=2)),
        "num_beams": num_beams,
        "num_return_sequences": draw(st.integers(1, num_beams)),
        "early_stopping": draw(st.sampled_from([True, False, "never"])),
    }


@st.composite
def out_of_range_generation_change(draw: st.DrawFn) -> dict[str, Any]:
    negative = st.integers(-100, 0)
    changes = [
        {"max_new_tokens": draw(negative)},
        {"temperature": draw(st.floats(max_value=0))},
        {"top_k": draw(negative)},
        {"top_p": draw(st.floats(allow_nan=True).filter(lambda p: not 0 < p <= 1))},
        {"min_p": draw(st.floats(allow_nan=True).filter(lambda p: not 0 <= p <= 1))},
        {"repetition_penalty": draw(st.floats(max_value=0))},
        {"num_beams": draw(negative)},
        {"num_beams": 2, "num_return_sequences": draw(st.integers(3, 10))},
        {"num_beams": 2, "do_sample": True, "num_return_sequences": 1},
        {"early_stopping": draw(st.text(max_size=8).filter(lambda v: v != "never"))},
        {"use_cache": False, "static_cache": True},
        {"do_sample": False, "top_k": draw(st.integers(1, 100))},  # an ignored option: an error
        {"prompt_lookup_tokens": draw(st.integers(-100, -1))},
        {"prompt_lookup_max_ngram": draw(negative)},
        {"prompt_lookup_tokens": draw(st.integers(1, 10)), "do_sample": True},  # greedy only
    ]
    return draw(st.sampled_from(changes))


@FAST
@given(valid_generation_fields())
def test_random_valid_generation_configs_construct(fields: dict[str, Any]) -> None:
    config = GenerationConfig(**fields)
    assert config.eos_token_ids == tuple(fields["eos_token_ids"])


# ---- both configs ---------------------------------------------------------------------------
CONFIGS = pytest.mark.parametrize(
    ("config_class", "valid_fields", "out_of_range_change"),
    [
        (ModelConfig, valid_model_fields, out_of_range_model_change),
        (GenerationConfig, valid_generation_fields, out_of_range_generation_change),
    ],
    ids=["model", "generation"],
)


@CONFIGS
@FAST
@given(data=st.data())
def test_a_field_of_the_wrong_type_is_a_config_error(
    config_class: type, valid_fields: Any, out_of_range_change: Any, data: st.DataObject
) -> None:
    fields = data.draw(valid_fields())
    annotations = _annotations(config_class)
    name = data.draw(st.sampled_from(sorted(annotations)))
    value = data.draw(ANY_VALUE.filter(lambda v: not _type_ok(v, annotations[name])))
    try:
        config_class(**{**fields, name: value})
    except ConfigError as error:
        assert name in str(error)
    else:
        raise AssertionError(f"{name}={value!r} was accepted")


@CONFIGS
@FAST
@given(data=st.data())
def test_an_out_of_range_value_is_a_config_error(
    config_class: type, valid_fields: Any, out_of_range_change: Any, data: st.DataObject
) -> None:
    fields, change = data.draw(valid_fields()), data.draw(out_of_range_change())
    try:
        config_class(**{**fields, **change})
    except ConfigError:
        return
    raise AssertionError(f"{change} was accepted")
