"""ModernBERT: random-initialised `transformers` models of odd shapes, saved with save_pretrained
and opened by tformer, give transformers' hidden states and logits on a padded batch longer
than the local window (so the window and the per-type rotary bases matter), export back to a
directory transformers loads with the same outputs, and run under `tformer explain`, `embed`
and `fill-mask`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tformer  # noqa: E402
from hf_parity import assert_close, char_tokenizer, randomise, run_hf, run_tformer  # noqa: E402
from tformer import CheckpointError, build_model  # noqa: E402
from tformer.cli import main  # noqa: E402
from tformer.errors import ConfigError  # noqa: E402
from tformer.pretrained import save_hf_directory  # noqa: E402

VOCAB = 61
WINDOW = 4  # local_attention: 2 positions on either side; the batch has 13


def modernbert(cls_name: str, **options) -> torch.nn.Module:
    """4 blocks (global, local, local, global), head_dim 10 (30 / 3), rotary bases 1e4 global and
    500 local; biases and LayerNorm biases switched on by `options`."""
    config = transformers.ModernBertConfig(
        vocab_size=VOCAB, hidden_size=30, num_hidden_layers=4, num_attention_heads=3,
        intermediate_size=44, max_position_embeddings=64, local_attention=WINDOW,
        global_rope_theta=1e4, local_rope_theta=500.0, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, **{"num_labels": 3, **options},
    )  # fmt: skip
    torch.manual_seed(0)
    return randomise(getattr(transformers, cls_name)(config))


MODELS = {
    "mlm": ("ModernBertForMaskedLM", {}),
    "mlm-biases": ("ModernBertForMaskedLM", {"norm_bias": True, "mlp_bias": True,
                                             "attention_bias": True, "classifier_bias": True}),
    "base": ("ModernBertModel", {}),
    "classify-cls": ("ModernBertForSequenceClassification", {}),
    "classify-mean": ("ModernBertForSequenceClassification", {"classifier_pooling": "mean"}),
    "tokens": ("ModernBertForTokenClassification", {"classifier_bias": True}),
    "qa": ("ModernBertForQuestionAnswering", {"num_labels": 2}),  # the tagger's layers
}  # fmt: skip


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two right-padded rows (lengths 13 and 8), longer than the window."""
    ids = torch.randint(3, VOCAB, (2, 13))
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, 8:] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.fixture(params=sorted(MODELS))
def checkpoint(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    cls_name, options = MODELS[request.param]
    model = modernbert(cls_name, **options)
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


def test_imported_modernbert_matches_transformers_past_the_window(checkpoint) -> None:
    hf_model, directory = checkpoint
    model, _ = tformer.load(directory)
    assert model.config.block_types(4) == ("full", "sliding", "sliding", "full")
    ids, mask = _batch()
    assert_close(run_tformer(model, ids, mask), run_hf(hf_model, ids, mask), mask)


def test_window_and_local_rotary_base_change_the_outputs(checkpoint) -> None:
    """Without them the same weights give other outputs: the parity above depends on both."""
    hf_model, directory = checkpoint
    model, _ = tformer.load(directory)
    ids, mask = _batch()
    theirs = run_hf(hf_model, ids, mask)["hidden"][mask.bool()]
    for change in ({"layer_types": None, "sliding_window": None, "rope_local_theta": None},
                   {"rope_local_theta": None}):  # fmt: skip
        other = build_model(model.config.replace(**change))
        other.load_state_dict(model.state_dict())
        hidden = run_tformer(other.eval(), ids, mask)["hidden"][mask.bool()]
        assert (hidden - theirs).abs().max() > 1e-3


def test_exported_modernbert_loads_in_transformers_with_same_outputs(checkpoint, tmp_path) -> None:
    hf_model, directory = checkpoint
    model, _ = tformer.load(directory)
    save_hf_directory(model, tmp_path / "exported")
    exported = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert exported["model_type"] == "modernbert"
    reloaded = type(hf_model).from_pretrained(tmp_path / "exported").eval()
    ids, mask = _batch()
    assert_close(run_tformer(model, ids, mask), run_hf(reloaded, ids, mask), mask)


def test_older_config_keys_read_as_transformers_reads_them(tmp_path: Path) -> None:
    """ModernBERT-base's config.json: global/local_rope_theta and global_attn_every_n_layers,
    no layer_types or rope_parameters."""
    hf_model = modernbert("ModernBertForMaskedLM")
    hf_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["layer_types"], config["rope_parameters"]
    config.update(global_rope_theta=1e4, local_rope_theta=500.0, global_attn_every_n_layers=3)
    (tmp_path / "config.json").write_text(json.dumps(config))
    model, _ = tformer.load(tmp_path)
    assert (model.config.rope_theta, model.config.rope_local_theta) == (1e4, 500.0)
    ids, mask = _batch()
    assert_close(run_tformer(model, ids, mask), run_hf(hf_model, ids, mask), mask)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"classifier_activation": "silu"}, r"classifier_activation='silu'; tformer supports only"),
     ({"decoder_bias": False}, r"decoder_bias=False; tformer supports only"),
     ({"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0,
                                              "rope_theta": 1e4},
                           "sliding_attention": {"rope_type": "linear", "factor": 2.0,
                                                 "rope_theta": 500.0}}},
      r"rescales the full_attention blocks' rotary")],
    ids=["head-activation", "no-decoder-bias", "rope-scaling"],
)  # fmt: skip
def test_unsupported_modernbert_settings_are_refused(tmp_path: Path, changes, message) -> None:
    modernbert("ModernBertForMaskedLM").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **changes}))
    with pytest.raises(CheckpointError, match=message):
        tformer.load(tmp_path)


@pytest.fixture
def with_tokenizer(tmp_path: Path) -> Path:
    """A ModernBERT MLM directory with a WordPiece-free character tokenizer.json."""
    tokenizer = char_tokenizer(
        tmp_path, {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "unk": "[UNK]", "mask": "[MASK]"}
    )
    config = transformers.ModernBertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=24, num_hidden_layers=3,
        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
        local_attention=WINDOW, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    randomise(transformers.ModernBertForMaskedLM(config)).save_pretrained(tmp_path / "hf")
    tokenizer.save(tmp_path / "hf")
    return tmp_path / "hf"


def test_embed_fill_mask_and_explain_cli_run_on_modernbert(
    with_tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["embed", str(with_tokenizer), "the fox", "a lazy dog jumps"]) == 0
    assert main(["fill-mask", str(with_tokenizer), "the [MASK]ox"]) == 0
    out = tmp_path / "report.html"
    assert main(["explain", str(with_tokenizer), "--text", "the fox", "--out", str(out)]) == 0
    assert "<canvas" in out.read_text()
    assert "tformer: error" not in capsys.readouterr().err


def test_first_block_without_attention_norm_needs_pre_norm_after_an_embedding_norm() -> None:
    with pytest.raises(ConfigError, match=r"first_block_attn_norm=False needs"):
        tformer.ModelConfig(arch="encoder", first_block_attn_norm=False, embedding_norm=True)


def test_all_global_blocks_read_as_a_model_without_window(tmp_path: Path) -> None:
    hf_model = modernbert("ModernBertForMaskedLM", global_attn_every_n_layers=1)
    hf_model.save_pretrained(tmp_path)
    model, _ = tformer.load(tmp_path)
    assert (model.config.sliding_window, model.config.rope_local_theta) == (None, None)
    ids, mask = _batch()
    assert_close(run_tformer(model, ids, mask), run_hf(hf_model, ids, mask), mask)
