"""Local (sliding-window) attention per block: the bidirectional window, `layer_types`, and
Qwen2's use_sliding_window against transformers with the same random weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tformer  # noqa: E402
from hf_parity import assert_close, randomise, run_hf, run_tformer  # noqa: E402
from tformer import ModelConfig, build_model  # noqa: E402
from tformer.errors import ConfigError  # noqa: E402
from tformer.generation import generate  # noqa: E402
from tformer.modules.mask import build_attention_mask  # noqa: E402
from tformer.pretrained import save_hf_directory  # noqa: E402

VOCAB = 61


def test_bidirectional_window_sees_half_the_window_on_either_side() -> None:
    """|i - j| <= window // 2 (ModernBERT's local attention), by hand, with a padded key."""
    padding = torch.tensor([[1, 1, 1, 1, 1, 0]])
    mask = build_attention_mask(6, 6, causal=False, key_padding_mask=padding, window=4)
    expected = torch.tensor([[abs(i - j) <= 2 and j < 5 for j in range(6)] for i in range(6)])
    assert torch.equal(mask.allowed[0, 0], expected)


def test_a_window_wider_than_every_distance_is_no_mask() -> None:
    assert build_attention_mask(5, 5, causal=False, window=8).allowed is None
    assert build_attention_mask(5, 5, causal=False, window=7).allowed is not None


def _config(**overrides) -> ModelConfig:
    base = dict(arch="decoder", vocab_size=VOCAB, d_model=16, n_heads=2, n_layers=2, d_ff=32,
                positional="rotary", norm="rmsnorm", norm_position="pre", dropout=0.0)  # fmt: skip
    return ModelConfig(**{**base, **overrides})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"layer_types": ("full",)}, "names 1 blocks but n_layers=2"),
        ({"layer_types": ("full", "local")}, "layer_types entry"),
        ({"layer_types": ("full", "sliding")}, "set sliding_window"),
        ({"rope_local_theta": 1e4}, "rope_local_theta is the rotary base of 'sliding' blocks"),
    ],
)
def test_inconsistent_local_attention_settings_are_refused(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(**fields)


def test_sliding_blocks_use_the_local_rotary_base() -> None:
    """A window wider than the input leaves only the rotary base: every block "sliding" with
    rope_local_theta = t computes what rope_theta = t computes."""
    local = build_model(_config(sliding_window=64, rope_local_theta=500.0, rope_theta=1e6))
    plain = build_model(_config(rope_theta=500.0))
    plain.load_state_dict(local.state_dict())
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(local.eval()(ids).logits, plain.eval()(ids).logits)


def _qwen2_windowed() -> torch.nn.Module:
    """Block 0 full, block 1 windowed (3 positions): transformers' max_window_layers=1."""
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
        use_sliding_window=True, sliding_window=3, max_window_layers=1,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return randomise(transformers.Qwen2ForCausalLM(config))


@pytest.mark.parametrize("config_json_has_layer_types", [True, False])
def test_qwen2_sliding_window_on_its_blocks_equals_transformers(
    tmp_path: Path, config_json_has_layer_types: bool
) -> None:
    """Logits on a right-padded 9-token batch; older config.json files have no layer_types,
    only max_window_layers, and mean the same."""
    hf_model = _qwen2_windowed()
    hf_model.save_pretrained(tmp_path)
    if not config_json_has_layer_types:
        path = tmp_path / "config.json"
        hf = json.loads(path.read_text())
        del hf["layer_types"]
        path.write_text(json.dumps(hf))
    model, _ = tformer.load(tmp_path)
    assert model.config.layer_types == ("full", "sliding")
    assert model.config.sliding_window == 3
    ids = torch.randint(3, VOCAB, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    assert_close(run_tformer(model, ids, mask), run_hf(hf_model, ids, mask), mask)
    unwindowed = build_model(model.config.replace(layer_types=None, sliding_window=None))
    unwindowed.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(unwindowed.eval()(ids).logits, model(ids).logits)


def test_qwen2_windowed_decoding_and_export_equal_transformers(tmp_path: Path) -> None:
    hf_model = _qwen2_windowed()
    hf_model.save_pretrained(tmp_path / "hf")
    model, _ = tformer.load(tmp_path / "hf")
    prompt = torch.randint(3, VOCAB, (1, 5))
    ours = generate(model, prompt, max_new_tokens=8, eos_token_ids=())
    with torch.no_grad():
        theirs = hf_model.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=None,
                                   pad_token_id=0)[:, 5:]  # fmt: skip
    assert ours.tolist() == theirs.tolist()

    save_hf_directory(model, tmp_path / "out")
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert exported.config.layer_types == ["full_attention", "sliding_attention"]
    ids = torch.randint(3, VOCAB, (2, 9))
    mask = torch.ones_like(ids)
    assert_close(run_tformer(model, ids, mask), run_hf(exported, ids, mask), mask)


def test_qwen2_with_the_window_switched_off_has_no_window(tmp_path: Path) -> None:
    """use_sliding_window false: transformers ignores sliding_window, so tformer does too."""
    config = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, use_sliding_window=False, sliding_window=3,
        max_window_layers=0,
    )  # fmt: skip
    transformers.Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    model, _ = tformer.load(tmp_path)
    assert model.config.sliding_window is None and model.config.layer_types is None


def test_mistral_with_a_null_window_attends_to_every_position(tmp_path: Path) -> None:
    """sliding_window null (Mistral 7B v0.2 and later) is no window, not the 4096 of files
    that leave the key out."""
    config = transformers.MistralConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, intermediate_size=48, sliding_window=None,
    )  # fmt: skip
    transformers.MistralForCausalLM(config).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["sliding_window"] is None
    model, _ = tformer.load(tmp_path)
    assert model.config.sliding_window is None
