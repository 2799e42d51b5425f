"""ModelConfig: presets load, round-trips are lossless, and every invalid value is named."""

from __future__ import annotations

import pytest

from tformer import ModelConfig, preset_names
from tformer.errors import ConfigError, MissingFileError


def test_transformer_base_preset_is_the_2017_base_model() -> None:
    config = ModelConfig.preset("transformer-base")
    assert config.arch == "encoder-decoder"
    assert (config.encoder_layers, config.decoder_layers) == (6, 6)
    assert (config.d_model, config.n_heads, config.d_ff) == (512, 8, 2048)
    assert (config.norm_position, config.activation, config.positional) == (
        "post",
        "relu",
        "sinusoidal",
    )
    assert config.dropout == 0.1
    assert config.tie_embeddings and config.scale_embeddings


def test_every_family_has_a_tiny_preset() -> None:
    names = preset_names()
    for name in ("tiny-decoder", "tiny-encoder", "tiny-seq2seq", "gpt-mini", "bert-mini"):
        assert name in names


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_save_and_load_round_trip(tmp_path, suffix: str) -> None:
    config = ModelConfig.preset("llama-mini", n_layers=3, bos_id=1)
    path = tmp_path / f"config{suffix}"
    config.save(path)
    assert ModelConfig.load(path) == config


def test_preset_overrides_are_validated() -> None:
    with pytest.raises(ConfigError, match="n_heads=5 must divide d_model=32"):
        ModelConfig.preset("tiny-decoder", n_heads=5)


LLAMA3_ROPE = {"positional": "rotary", "rope_scaling": "llama3", "rope_original_max_seq_len": 64}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"d_model": 512, "n_heads": 7}, r"n_heads=7 must divide d_model=512; try n_heads=8"),
        ({"n_heads": 8, "n_kv_heads": 3}, r"n_heads=8 must be divisible by n_kv_heads=3"),
        ({"activation": "tanh"}, r"activation='tanh' is not supported; choose one of relu, gelu"),
        ({"dropout": -0.1}, r"dropout=-0.1 must be in \[0, 1\)"),
        ({"attention_dropout": 1.0}, r"attention_dropout=1.0 must be in \[0, 1\)"),
        (
            {"positional": "rotary", "d_model": 36, "n_heads": 4},
            r"positional='rotary' needs an even head size, got head_dim=9",
        ),
        ({"arch": "rnn"}, r"arch='rnn' is not supported; choose one of decoder, encoder"),
        ({"positional": "alibi"}, r"positional='alibi' is not supported"),
        ({"norm": "batchnorm"}, r"norm='batchnorm' is not supported"),
        ({"norm_position": "sandwich"}, r"norm_position='sandwich' is not supported"),
        ({"vocab_size": 0}, r"vocab_size=0 must be positive"),
        ({"n_layers": -2}, r"n_layers=-2 must be positive"),
        ({"pad_id": 32000}, r"pad_id=32000 must be a token id in \[0, 32000\)"),
        ({"head": "masked-lm"}, r"head \(for arch='decoder'\)='masked-lm' is not supported"),
        ({"pooling": "max"}, r"pooling='max' is not supported; choose one of cls, mean"),
        ({"pooler_activation": "swish"}, r"pooler_activation='swish' is not supported"),
        ({"position_offset": 2}, r"position_offset=2 needs positional='learned'"),
        ({"position_offset": -1, "positional": "learned"}, r"position_offset=-1 must be >= 0"),
        (
            {"positions_skip_padding": True, "positional": "learned", "position_offset": 2},
            r"positions_skip_padding=True needs arch='encoder', got arch='decoder'",
        ),
        (
            {"arch": "encoder", "positional": "learned", "positions_skip_padding": True},
            r"needs a pad_id and position_offset >= 1 .* pad_id=0, position_offset=0",
        ),
        (
            {"positional": "rotary", "rope_scaling": "yarn"},
            r"rope_scaling='yarn' is not supported; choose one of linear, llama3",
        ),
        ({"rope_scaling": "linear"}, r"rope_scaling='linear' needs positional='rotary'"),
        ({"rope_factor": 8.0}, r"rope_factor=8.0 has no effect with rope_scaling=None"),
        (
            {"positional": "rotary", "rope_scaling": "linear", "rope_high_freq_factor": 2.0},
            r"rope_high_freq_factor=2.0 has no effect with rope_scaling='linear'",
        ),
        (
            {"positional": "rotary", "rope_scaling": "llama3"},
            r"rope_scaling='llama3' needs rope_original_max_seq_len",
        ),
        (
            {**LLAMA3_ROPE, "rope_low_freq_factor": 4.0},
            r"rope_low_freq_factor=4.0 must be below rope_high_freq_factor=4.0",
        ),
        (
            {"positional": "rotary", "rope_scaling": "linear", "rope_factor": 0.0},
            r"rope_factor=0.0 must be positive",
        ),
    ],
)
def test_invalid_config_names_the_field_and_what_is_allowed(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**changes)


def test_unknown_field_is_rejected_with_the_known_fields() -> None:
    with pytest.raises(ConfigError, match=r"unknown ModelConfig field\(s\) dmodel; known fields"):
        ModelConfig.from_dict({"dmodel": 128})


def test_unknown_preset_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'gpt-9'; available: .*tiny-decoder"):
        ModelConfig.preset("gpt-9")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"d_model": "big"}, r"d_model='big' must be an integer \(got str\)"),
        ({"n_layers": True}, r"n_layers=True must be an integer \(got bool\)"),
        ({"n_heads": 8.0}, r"n_heads=8.0 must be an integer \(got float\)"),
        ({"n_kv_heads": "2"}, r"n_kv_heads='2' must be an integer or None \(got str\)"),
        ({"dropout": "0.1"}, r"dropout='0.1' must be a number \(got str\)"),
        ({"bias": 1}, r"bias=1 must be true or false \(got int\)"),
        ({"qkv_bias": "yes"}, r"qkv_bias='yes' must be true or false or None \(got str\)"),
        ({"qk_norm": None}, r"qk_norm=None must be true or false \(got NoneType\)"),
        ({"rope_scaling": 3}, r"rope_scaling=3 must be a string or None \(got int\)"),
        ({"final_norm": "yes"}, r"final_norm='yes' must be true or false or None \(got str\)"),
        ({"arch": 3}, r"arch=3 must be a string \(got int\)"),
        (
            {"labels": ["a", 2], "n_labels": 2},
            r"labels=\['a', 2\] must be a list of strings or None$",
        ),
        ({"labels": "ab", "n_labels": 2}, r"labels='ab' must be a list of strings or None"),
    ],
)
def test_value_of_wrong_type_names_field_value_and_expected_type(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**changes)


def test_an_int_is_a_valid_float_and_a_list_becomes_a_tuple() -> None:
    config = ModelConfig(rope_theta=500000, dropout=0, labels=["neg", "pos"])
    assert config.rope_theta == 500000 and config.labels == ("neg", "pos")
    assert hash(config) == hash(ModelConfig(rope_theta=500000, dropout=0, labels=("neg", "pos")))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("config.json", '{"d_model": 64,\n}', r"config.json: invalid JSON \(Expecting"),
        ("config.toml", "[model]\nd_model = = 3\n", r"config.toml: invalid TOML"),
        ("config.json", '{"d_model": "64"}', r"config.json: d_model='64' must be an integer"),
        ("config.json", "[1, 2]", r"a model config is a table of fields, not list"),
    ],
)
def test_unreadable_config_file_is_named(tmp_path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        ModelConfig.load(path)


def test_missing_config_file_is_a_missing_file_error(tmp_path) -> None:
    with pytest.raises(MissingFileError, match="no config file at"):
        ModelConfig.load(tmp_path / "absent.json")
