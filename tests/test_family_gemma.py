"""Gemma, Gemma 2 and Gemma 3 (text) against transformers with the same random weights.

Small odd models (head_dim 12 != 32 / 4, GQA ratio 2, tied and untied output projections),
saved with save_pretrained and opened with tformer.load: logits on a right-padded batch longer
than the sliding window, with soft-caps low enough to bend the scores and logits; greedy and
4-beam decoding of left-padded prompts past the window; export back; explain. The mechanisms
(norm weight offset, soft-capping, the embedding normaliser's rounding) are checked by hand too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tformer  # noqa: E402
from hf_parity import assert_close, randomise, run_hf, run_tformer  # noqa: E402
from tformer import CheckpointError, ModelConfig, build_model  # noqa: E402
from tformer.cli import main  # noqa: E402
from tformer.errors import ConfigError  # noqa: E402
from tformer.generation import generate, left_pad  # noqa: E402
from tformer.modules.attention import MultiHeadAttention  # noqa: E402
from tformer.modules.embedding import TokenEmbedding  # noqa: E402
from tformer.modules.mask import AttentionMask  # noqa: E402
from tformer.modules.norm import RMSNorm  # noqa: E402
from tformer.pretrained import save_hf_directory  # noqa: E402

VOCAB = 61
WINDOW = 4  # the batches below have 9 tokens, decoding reaches 15
SHAPE = dict(
    vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
    intermediate_size=48, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
    eos_token_id=2,
)  # fmt: skip


def _gemma(tie: bool = True) -> torch.nn.Module:
    config = transformers.GemmaConfig(**SHAPE, num_hidden_layers=2, tie_word_embeddings=tie)
    return transformers.GemmaForCausalLM(config)


def _gemma2(tie: bool = True) -> torch.nn.Module:
    """Local, global, local; caps of 2 and 3 are within the range of the perturbed scores and
    logits, and query_pre_attn_scalar 10 is neither head_dim nor hidden / heads."""
    config = transformers.Gemma2Config(
        **SHAPE, num_hidden_layers=3, query_pre_attn_scalar=10, sliding_window=WINDOW,
        attn_logit_softcapping=2.0, final_logit_softcapping=3.0, tie_word_embeddings=tie,
    )  # fmt: skip
    return transformers.Gemma2ForCausalLM(config)


GEMMA3_ROPE = {
    "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e5},
    "sliding_attention": {"rope_type": "default", "rope_theta": 50.0},
}
LOCAL_RESCALED = {**GEMMA3_ROPE, "sliding_attention": GEMMA3_ROPE["full_attention"]}


def _gemma3(tie: bool = True) -> torch.nn.Module:
    """Gemma 3's pattern of five local blocks per global one, on 6 blocks; the global blocks'
    rotary linearly rescaled (as Gemma 3 4B's), the local ones' a base of their own."""
    config = transformers.Gemma3TextConfig(
        **SHAPE, num_hidden_layers=6, query_pre_attn_scalar=10, sliding_window=WINDOW,
        rope_parameters=GEMMA3_ROPE, final_logit_softcapping=3.0, tie_word_embeddings=tie,
    )  # fmt: skip
    return transformers.Gemma3ForCausalLM(config)


MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "gemma": _gemma,
    "gemma-untied": lambda: _gemma(tie=False),
    "gemma2": _gemma2,
    "gemma2-untied": lambda: _gemma2(tie=False),
    "gemma3": _gemma3,
}


def _perturbed(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomise(MODELS[name]())


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(request, tmp_path_factory) -> tuple[str, torch.nn.Module, tformer.TformerModel, Path]:
    hf = _perturbed(request.param)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    ours, _ = tformer.load(path)
    return request.param, hf, ours.eval(), path


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two right-padded rows of 9 and 6 tokens, both longer than the window."""
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids.masked_fill(mask == 0, 0), mask


def _logits(model: tformer.TformerModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids).logits


def test_logits_equal_transformers_on_a_padded_batch_longer_than_the_window(pair) -> None:
    _, hf, ours, _ = pair
    ids, mask = _batch()
    assert_close(run_tformer(ours, ids, mask), run_hf(hf, ids, mask), mask)


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("gemma2", {"layer_types": None, "sliding_window": None}),
        ("gemma3", {"layer_types": None, "sliding_window": None, "rope_local_theta": None}),
        ("gemma2", {"attention_softcap": None}),
        ("gemma2", {"logit_softcap": None}),
        ("gemma3", {"rope_local_theta": None}),
    ],
)
def test_each_mechanism_changes_the_logits(name: str, change: dict, tmp_path: Path) -> None:
    """The window, the caps and the local rotary base all matter on the test batch, so the
    equality above would catch any of them being dropped."""
    _perturbed(name).save_pretrained(tmp_path)
    ours, _ = tformer.load(tmp_path)
    without = build_model(ours.config.replace(**change))
    without.load_state_dict(ours.state_dict())
    ids, _ = _batch()
    assert (_logits(ours, ids) - _logits(without, ids)).abs().max() > 1e-2


def test_blocks_are_windowed_as_config_json_says(pair) -> None:
    name, hf, ours, _ = pair
    expected = {"gemma": None, "gemma2": ("sliding", "full", "sliding")}
    expected["gemma3"] = ("sliding",) * 5 + ("full",)
    assert ours.config.layer_types == expected[name.removesuffix("-untied")]
    assert ours.config.tie_embeddings == hf.config.tie_word_embeddings


@pytest.mark.parametrize("num_beams", [1, 4])
def test_decoding_is_token_identical_to_transformers(pair, num_beams: int) -> None:
    """Left-padded prompts of 7, 3 and 5 tokens and 8 new ones: rows decode past the window."""
    _, hf, ours, _ = pair
    ids, mask = left_pad([[5, 9, 3, 17, 8, 30, 11], [12, 4, 40], [25, 7, 7, 19, 33]], pad_id=0)
    with torch.no_grad():
        theirs = hf.generate(
            ids, attention_mask=mask, max_new_tokens=8, do_sample=False, num_beams=num_beams,
            eos_token_id=None, pad_token_id=0, length_penalty=1.0, early_stopping=False,
        )[:, ids.shape[1]:]  # fmt: skip
    mine = generate(ours, ids, mask, max_new_tokens=8, num_beams=num_beams, eos_token_id=[])
    assert mine.tolist() == theirs.tolist()
    assert len({tuple(row) for row in mine.tolist()}) == 3  # not one constant answer


def test_export_loads_in_transformers_with_the_same_logits(pair, tmp_path: Path) -> None:
    _, hf, ours, _ = pair
    save_hf_directory(ours, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == hf.config.model_type
    reloaded = type(hf).from_pretrained(tmp_path).eval()
    ids, mask = _batch()
    assert_close(run_tformer(ours, ids, mask), run_hf(reloaded, ids, mask), mask)


def test_explain_writes_a_report(pair, tmp_path: Path) -> None:
    _, _, _, path = pair
    out = tmp_path / "report.html"
    assert main(["explain", str(path), "--text", "5 9 3 17 8 30", "--out", str(out)]) == 0
    assert "<canvas" in out.read_text()


# ---- older config.json files and what tformer refuses ---------------------------------------
def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))


def test_gemma3_reads_the_older_top_level_rope_keys(tmp_path: Path) -> None:
    """Files from before transformers 5: rope_theta, rope_local_base_freq and rope_scaling at
    the top, the block pattern as sliding_window_pattern, no layer_types."""
    hf = _perturbed("gemma3")
    hf.save_pretrained(tmp_path)
    _edit_config(
        tmp_path, rope_parameters=None, layer_types=None, rope_theta=1e5,
        rope_local_base_freq=50.0, rope_scaling={"rope_type": "linear", "factor": 2.0},
        sliding_window_pattern=6,
    )  # fmt: skip
    ours, _ = tformer.load(tmp_path)
    assert ours.config.layer_types == ("sliding",) * 5 + ("full",)
    assert (ours.config.rope_theta, ours.config.rope_local_theta) == (1e5, 50.0)
    ids, mask = _batch()
    assert_close(run_tformer(ours, ids, mask), run_hf(hf, ids, mask), mask)


def test_gemma2_without_layer_types_alternates_local_and_global(tmp_path: Path) -> None:
    hf = _perturbed("gemma2")
    hf.save_pretrained(tmp_path)
    _edit_config(tmp_path, layer_types=None)
    ours, _ = tformer.load(tmp_path)
    assert ours.config.layer_types == ("sliding", "full", "sliding")


def test_gemma2_with_null_caps_and_window_has_none(tmp_path: Path) -> None:
    """null in config.json switches a cap or the window off; it is not a missing value."""
    hf = _perturbed("gemma2")
    hf.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config.update(attn_logit_softcapping=None, final_logit_softcapping=None, sliding_window=None)
    path.write_text(json.dumps(config))
    ours, _ = tformer.load(tmp_path)
    assert ours.config.attention_softcap is None and ours.config.logit_softcap is None
    assert ours.config.sliding_window is None and ours.config.layer_types is None


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        ("gemma3", {"use_bidirectional_attention": True}, "use_bidirectional_attention"),
        ("gemma2", {"use_bidirectional_attention": True}, "use_bidirectional_attention"),
        ("gemma3", {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
        ("gemma3", {"rope_parameters": LOCAL_RESCALED}, "local blocks' rotary"),
    ],
)
def test_settings_tformer_does_not_compute_are_refused(
    name: str, changes: dict, message: str, tmp_path: Path
) -> None:
    _perturbed(name).save_pretrained(tmp_path)
    _edit_config(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message):
        tformer.load(tmp_path)


# ---- the mechanisms by hand ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"norm_weight_offset": 1.0}, "needs norm='rmsnorm'"),
        ({"norm_weight_offset": float("nan"), "norm": "rmsnorm"}, "must be finite"),
        ({"sandwich_norm": True, "norm_position": "post"}, "needs norm_position='pre'"),
        ({"attention_softcap": 0.0}, "must be a positive number"),
        ({"logit_softcap": float("inf")}, "must be a positive number"),
        ({"logit_softcap": 30.0, "arch": "encoder"}, "has none to cap"),
    ],
)
def test_inconsistent_gemma_settings_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**{"norm_position": "pre", **fields})


def test_rms_norm_with_an_offset_scales_by_one_plus_the_weight() -> None:
    norm = RMSNorm(4, eps=1e-6, weight_offset=1.0)
    assert torch.equal(norm.weight, torch.zeros(4))  # starts at the identity
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, -0.5, 0.0, 1.0]))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    rms = (x.pow(2).mean() + 1e-6).sqrt()
    torch.testing.assert_close(norm(x), x / rms * torch.tensor([1.5, 0.5, 1.0, 2.0]))


@pytest.mark.parametrize("need_weights", [False, True])
def test_attention_softcap_bounds_the_scaled_scores_before_the_mask(need_weights) -> None:
    """softmax(cap * tanh(s q.k / cap) + mask) v by hand, causal."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(8, 2, 2, 4, bias=False, dropout=0.0, softcap=0.5).eval()
    x = torch.randn(1, 5, 8) * 4
    causal = AttentionMask(None, is_causal=True)
    out, _ = attention(x, mask=causal, need_weights=need_weights)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(1, 5, 2, 4).transpose(1, 2)

    q, k, v = (heads(p(x)) for p in (attention.q_proj, attention.k_proj, attention.v_proj))
    scores = torch.tanh((q @ k.transpose(-2, -1)) / 2 / 0.5) * 0.5  # scale 1/sqrt(4)
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    expected = attention.out_proj((scores.softmax(-1) @ v).transpose(1, 2).flatten(2))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_logit_softcap_is_tanh_of_the_logits_over_the_cap_times_the_cap(tmp_path: Path) -> None:
    _perturbed("gemma2").save_pretrained(tmp_path)
    ours, _ = tformer.load(tmp_path)
    uncapped = build_model(ours.config.replace(logit_softcap=None))
    uncapped.load_state_dict(ours.state_dict())
    ids, _ = _batch()
    expected = torch.tanh(_logits(uncapped, ids) / 3.0) * 3.0
    torch.testing.assert_close(_logits(ours, ids), expected)


def test_embedding_scale_is_rounded_to_the_weights_dtype_as_gemma_does() -> None:
    """In bf16 sqrt(1152) = 33.94 is 34.0 (transformers' Gemma casts its normaliser so)."""
    embedding = TokenEmbedding(5, 1152, scale=True).to(torch.bfloat16)
    with torch.no_grad():
        embedding.weight.fill_(1.0)
    assert embedding(torch.tensor([[0]]))[0, 0, 0].item() == 34.0
