"""Phi-3 and GPT-NeoX / Pythia against `transformers`: random-initialised models of odd shapes
(head_dim != hidden / heads, GQA ratios 1, 2 and 4, tied and untied, partial and full rotary,
parallel and sequential residual, a sliding window shorter than the batch) saved with
save_pretrained, loaded by tformer, compared on padded batches, decoded greedily and with 4
beams, exported back and explained."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tformer  # noqa: E402
from hf_parity import TOL, assert_close, randomise, run_hf, run_tformer  # noqa: E402
from test_generation_parity import (  # noqa: E402
    NEW_TOKENS,
    ROWS,
    _frequent_token,
    _hf_generate,
    _through_eos,
)
from test_pretrained_families import VOCAB, _batch, _edit_config  # noqa: E402
from tformer import CheckpointError, ModelConfig  # noqa: E402
from tformer.cli import main  # noqa: E402
from tformer.errors import ConfigError  # noqa: E402
from tformer.generation import generate, left_pad  # noqa: E402
from tformer.pretrained import save_hf_directory  # noqa: E402

_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def _phi3(
    kv_heads: int, *, head_dim: int | None = None, rotary: float = 1.0,
    window: int | None = None, tie: bool = False,
) -> torch.nn.Module:  # fmt: skip
    config = transformers.Phi3Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=kv_heads, intermediate_size=48, max_position_embeddings=64,
        partial_rotary_factor=rotary, sliding_window=window, tie_word_embeddings=tie,
        **({"head_dim": head_dim} if head_dim else {}), **_IDS,
    )  # fmt: skip
    return transformers.Phi3ForCausalLM(config)


def _neox(
    *, parallel: bool, rotary: float, hidden: int = 32, heads: int = 2, tie: bool = False,
    attention_bias: bool = True, theta: float = 10000.0,
) -> torch.nn.Module:  # fmt: skip
    config = transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads,
        intermediate_size=40, max_position_embeddings=64, rotary_pct=rotary,
        use_parallel_residual=parallel, tie_word_embeddings=tie, attention_bias=attention_bias,
        rotary_emb_base=theta, **_IDS,
    )  # fmt: skip
    return transformers.GPTNeoXForCausalLM(config)


MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    # head_dim 12 != 32 / 4, GQA 4/2, half of each head rotated, a window of 4 on 9 tokens
    "phi3-gqa2-head12-partial-window4": lambda: _phi3(2, head_dim=12, rotary=0.5, window=4),
    "phi3-gqa4-tied": lambda: _phi3(1, tie=True),  # GQA 4/1
    "phi3-mha-rotary0.75": lambda: _phi3(4, rotary=0.75),  # GQA 1: 6 of 8 features rotated
    "neox-parallel-rotary0.25": lambda: _neox(parallel=True, rotary=0.25),  # Pythia's
    "neox-sequential-rotary1.0": lambda: _neox(parallel=False, rotary=1.0, hidden=24, heads=4),
    "neox-parallel-tied-no-attention-bias": lambda: _neox(
        parallel=True, rotary=0.25, hidden=48, heads=3, tie=True, attention_bias=False
    ),
}
# what an export writes: a Phi-3 with full rotary and no window computes as Llama does
EXPORTED_AS = {"phi3-gqa4-tied": "llama"}


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, torch.nn.Module, tformer.TformerModel]:
    torch.manual_seed(0)
    hf = randomise(MODELS[request.param]())
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    ours, _ = tformer.load(path)
    return request.param, hf, ours.eval()


def _left_padded_outputs(model: torch.nn.Module, ids, mask, positions, *, hf: bool) -> dict:
    with torch.no_grad():
        if hf:
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                        output_hidden_states=True)  # fmt: skip
            return {"logits": out.logits, "hidden": out.hidden_states[-1]}
        out = model(ids, attention_mask=mask, position_ids=positions)
        return {"logits": out.logits, "hidden": out.last_hidden_state}


def test_logits_equal_transformers_on_right_and_left_padded_batches(pair) -> None:
    _, hf, ours = pair
    ids, mask = _batch(pad_id=0)
    assert_close(run_tformer(ours, ids, mask), run_hf(hf, ids, mask), mask)
    left, left_mask = left_pad([[5, 9, 3, 17, 8, 30, 11, 4, 22], [12, 4, 40, 6]], pad_id=0)
    positions = (left_mask.cumsum(-1) - 1).clamp(min=0)
    theirs = _left_padded_outputs(hf, left, left_mask, positions, hf=True)
    mine = _left_padded_outputs(ours, left, left_mask, positions, hf=False)
    assert_close(mine, theirs, left_mask)


def test_config_carries_the_family_mechanisms(pair) -> None:
    name, _, ours = pair
    config = ours.config
    expected = {
        "phi3-gqa2-head12-partial-window4": dict(kv_heads=2, attention_head_dim=12,
                                                  rotary_dim=6, sliding_window=4),
        "phi3-gqa4-tied": dict(kv_heads=1, tie_embeddings=True, rotary_dim=8),
        "phi3-mha-rotary0.75": dict(kv_heads=4, rotary_dim=6),
        "neox-parallel-rotary0.25": dict(parallel_residual=True, rotary_dim=4, norm="layernorm"),
        "neox-sequential-rotary1.0": dict(parallel_residual=False, rotary_dim=6),
        "neox-parallel-tied-no-attention-bias": dict(parallel_residual=True, rotary_dim=4,
                                                     tie_embeddings=True,
                                                     use_attention_bias=False),
    }[name]  # fmt: skip
    assert {k: getattr(config, k) for k in expected} == expected


@pytest.mark.parametrize("num_beams", [1, 4])
def test_decoding_token_identical_to_transformers(pair, num_beams: int) -> None:
    """Left-padded prompts; EOS is a token greedy decoding produces at step 2 of row 0, so
    rows (and beams) can end mid-way while others go on."""
    _, hf, ours = pair
    ids, mask = left_pad(ROWS, pad_id=0)
    eos_id = _frequent_token(ours, ids, mask)
    theirs = _hf_generate(hf, ids, mask, eos_id, num_beams=num_beams)
    mine = generate(
        ours, ids, mask, max_new_tokens=NEW_TOKENS, num_beams=num_beams, eos_token_id=eos_id
    )
    assert _through_eos(mine, eos_id) == _through_eos(theirs, eos_id)
    if num_beams == 1:
        free = generate(ours, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=[])
        assert len({tuple(row) for row in free.tolist()}) == len(ROWS), "degenerate model"


def test_export_loads_in_transformers_with_the_same_logits(pair, tmp_path: Path) -> None:
    name, hf, ours = pair
    save_hf_directory(ours, tmp_path)
    exported = json.loads((tmp_path / "config.json").read_text())
    assert exported["model_type"] == EXPORTED_AS.get(name, hf.config.model_type)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids, mask = _batch(pad_id=0)
    assert_close(run_tformer(ours, ids, mask), run_hf(reloaded, ids, mask), mask)


def test_explain_writes_a_report(pair, tmp_path: Path) -> None:
    name, _, _ = pair
    path = tmp_path / "model"
    randomise(MODELS[name]()).save_pretrained(path)
    out = tmp_path / "report.html"
    assert main(["explain", str(path), "--text", "5 9 3 17 8", "--out", str(out)]) == 0
    assert "<canvas" in out.read_text()


def test_parallel_block_explanation_records_the_stream_after_attention() -> None:
    """In a parallel-residual block the stream "after attention" is the input plus the
    attention output; after the block it is that plus the feed-forward of the input."""
    from tformer.explainer import capture

    ours = tformer.build_model(ModelConfig(
        positional="rotary", norm_position="pre", parallel_residual=True, rotary_fraction=0.25,
        d_model=32, n_heads=2, n_layers=2, d_ff=40, vocab_size=VOCAB, dropout=0.0,
    )).eval()  # fmt: skip
    ids = torch.tensor([[5, 9, 3, 17]])
    block = ours.decoder.blocks[0]
    with torch.no_grad(), capture(ours) as seen:
        ours(ids)
    layer = seen["decoder"].layers[0]
    x = layer.residual["input"]
    with torch.no_grad():
        ffn = block.ffn(block.ffn_norm(x))
    assert (layer.residual["ffn"] - layer.residual["self_attn"] - ffn).abs().max() <= TOL
    assert (layer.residual["self_attn"] - x).abs().max() > 1e-3


def test_gpt_neox_reads_older_config_keys(tmp_path: Path) -> None:
    """Published Pythia files keep rotary_pct / rotary_emb_base at the top of config.json;
    transformers >= 5 writes rope_parameters."""
    hf = randomise(_neox(parallel=True, rotary=0.25, theta=5000.0))
    hf.save_pretrained(tmp_path)
    _edit_config(tmp_path, rope_parameters=None, rotary_pct=0.25, rotary_emb_base=5000.0)
    ours, _ = tformer.load(tmp_path)
    assert (ours.config.rotary_fraction, ours.config.rope_theta) == (0.25, 5000.0)
    ids, mask = _batch(pad_id=0)
    assert_close(run_tformer(ours, ids, mask), run_hf(hf, ids, mask), mask)


def test_gpt_neox_export_writes_the_names_every_version_reads(tmp_path: Path) -> None:
    from safetensors import safe_open

    ours, _ = tformer.load(_saved(tmp_path / "hf", _neox(parallel=True, rotary=0.25)))
    save_hf_directory(ours, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["rotary_pct"], config["use_parallel_residual"]) == (0.25, True)
    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert "embed_out.weight" in names and "lm_head.weight" not in names
    assert names >= {"gpt_neox.layers.1.attention.query_key_value.bias"}


def _saved(path: Path, hf: torch.nn.Module) -> Path:
    randomise(hf).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["longrope", "su"])
def test_phi3_long_context_rope_is_refused_naming_the_type(tmp_path: Path, kind: str) -> None:
    _saved(tmp_path, _phi3(2))
    factors = [1.0] * 4
    _edit_config(tmp_path, rope_parameters=None, rope_theta=1e4, rope_scaling={
        "type": kind, "short_factor": factors, "long_factor": factors})  # fmt: skip
    with pytest.raises(
        CheckpointError, match=rf"rope scaling type '{kind}'.*phi3; supported: none"
    ):
        tformer.load(tmp_path)


def test_odd_rotated_feature_count_is_refused() -> None:
    """transformers would rotate 4 features while spacing frequencies over 3: refused."""
    with pytest.raises(ConfigError, match=r"rotary_fraction=0.25 rotates .*=3 of head_dim=12"):
        ModelConfig(positional="rotary", d_model=36, n_heads=3, rotary_fraction=0.25)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rotary_fraction": 0.5}, r"rotary_fraction=0.5 needs positional='rotary'"),
        ({"positional": "rotary", "rotary_fraction": 0.0}, r"must be in \(0, 1\]"),
        ({"parallel_residual": True}, r"parallel_residual=True needs norm_position='pre'"),
        ({"parallel_residual": True, "norm_position": "pre", "arch": "encoder-decoder"},
         r"no cross-attention"),
    ],
)  # fmt: skip
def test_new_fields_are_validated(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**fields)


def test_phi3_window_decoding_matches_transformers_past_the_window(tmp_path: Path) -> None:
    """A 3-token window over a 6-token prompt and 10 new tokens, with the KV cache."""
    hf = randomise(_phi3(2, rotary=0.5, window=3))
    hf.save_pretrained(tmp_path)
    ours, _ = tformer.load(tmp_path)
    prompt = torch.randint(3, VOCAB, (1, 6))
    mine = generate(ours, prompt, max_new_tokens=10, eos_token_ids=())
    with torch.no_grad():
        theirs = hf.generate(prompt, max_new_tokens=10, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[:, 6:]  # fmt: skip
    assert mine.tolist() == theirs.tolist()
