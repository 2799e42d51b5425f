"""Marian (opus-mt): random-initialised `transformers` MarianMTModels of odd shapes, saved with
save_pretrained and opened by tformer, give transformers' logits on padded batches, export back
to a directory transformers loads with the same logits, and run under `tformer explain` and
`tformer translate`. Greedy and beam decoding are in test_generation_parity.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tformer  # noqa: E402
from hf_parity import assert_close, char_tokenizer, randomise, run_hf, run_tformer  # noqa: E402
from tformer import CheckpointError  # noqa: E402
from tformer.cli import main  # noqa: E402
from tformer.errors import ConfigError, InputError  # noqa: E402
from tformer.modules.position import sinusoidal_table  # noqa: E402
from tformer.pretrained import save_hf_directory  # noqa: E402

VOCAB = 61
PAD = VOCAB - 1  # opus-mt's layout: eos 0, pad (= decoder start) the last id


def marian(
    *, tie: bool = True, d_model: int = 27, heads: int = 3, activation: str = "swish", **extra
) -> torch.nn.Module:
    """An odd width (27: the sine half of the position table is one longer than the cosine
    half), opus-mt's swish and scaled embeddings, a random logits bias."""
    config = transformers.MarianConfig(
        vocab_size=VOCAB, d_model=d_model, encoder_layers=2, decoder_layers=3,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=40,
        decoder_ffn_dim=40, max_position_embeddings=40, activation_function=activation,
        scale_embedding=True, tie_word_embeddings=tie, pad_token_id=PAD, eos_token_id=0,
        decoder_start_token_id=PAD, forced_eos_token_id=None, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = randomise(transformers.MarianMTModel(config))
    with torch.no_grad():
        model.final_logits_bias.normal_()  # a buffer, so randomise leaves it at zero
    return model


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two right-padded sources (lengths 9 and 5) of real ids 1..PAD-1."""
    ids = torch.randint(1, PAD, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    return ids.masked_fill(mask == 0, PAD), mask


@pytest.fixture(params=["swish-odd-width", "gelu-even-width"])
def checkpoint(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    options = {
        "swish-odd-width": {},
        "gelu-even-width": {"d_model": 32, "heads": 4, "activation": "gelu"},
    }[request.param]
    model = marian(**options)
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


def test_halves_table_is_transformers_marian_table() -> None:
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    for width in (27, 32):
        theirs = MarianSinusoidalPositionalEmbedding(50, width).create_weight()
        assert (sinusoidal_table(50, width, "halves") - theirs).abs().max() <= 1e-6


def test_imported_marian_matches_transformers_on_padded_batch(checkpoint) -> None:
    hf_model, directory = checkpoint
    model, _ = tformer.load(directory)
    assert model.config.sinusoidal_layout == "halves" and model.config.start_id == PAD
    ids, mask = _batch()
    assert_close(run_tformer(model, ids, mask), run_hf(hf_model, ids, mask), mask)


def test_exported_marian_loads_in_transformers_with_same_logits(checkpoint, tmp_path) -> None:
    hf_model, directory = checkpoint
    model, _ = tformer.load(directory)
    save_hf_directory(model, tmp_path / "exported")
    exported = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert exported["model_type"] == "marian"
    assert exported["activation_function"] == hf_model.config.activation_function
    reloaded = transformers.MarianMTModel.from_pretrained(tmp_path / "exported").eval()
    ids, mask = _batch()
    assert_close(run_tformer(model, ids, mask), run_hf(reloaded, ids, mask), mask)


def test_interleaved_sinusoids_are_not_exported_as_marian(checkpoint, tmp_path) -> None:
    """The seed's own 2017 model (interleaved table) computes something else than Marian."""
    _, directory = checkpoint
    model, _ = tformer.load(directory)
    other = tformer.build_model(model.config.replace(sinusoidal_layout="interleaved"))
    with pytest.raises(ValueError, match=r"marian: sinusoidal_layout='interleaved'"):
        save_hf_directory(other, tmp_path / "refused")


@pytest.mark.parametrize(
    ("options", "named"),
    [({"share_encoder_decoder_embeddings": False}, "share_encoder_decoder_embeddings=False"),
     ({"tie": False}, "tie_word_embeddings=False")],
)  # fmt: skip
def test_separate_embedding_matrices_are_refused(tmp_path: Path, options, named) -> None:
    """Separate source/target embeddings, or (transformers >= 5) an untied output projection,
    which also unties encoder and decoder embeddings: not implemented, so refused."""
    marian(**options).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=rf"{named}; tformer supports only"):
        tformer.load(tmp_path)


def test_sentencepiece_only_tokenizer_is_one_clear_error(
    checkpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    """opus-mt directories ship source.spm/target.spm and no tokenizer.json."""
    _, directory = checkpoint
    for name in ("source.spm", "target.spm"):
        (directory / name).write_bytes(b"\x0a\x00")
    with pytest.raises(InputError, match=r"SentencePiece files \(source\.spm, target\.spm\)"):
        tformer.load(directory)
    assert main(["translate", str(directory)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tformer: error:") and "tokenizer.json" in err[0]


@pytest.fixture
def with_tokenizer(tmp_path: Path) -> Path:
    """A Marian directory with a character tokenizer.json whose ids are opus-mt's roles
    (eos 0, pad = decoder start)."""
    tokenizer = char_tokenizer(tmp_path, {"eos": "</s>", "unk": "<unk>", "pad": "<pad>"})
    pad = tokenizer.token_id("pad")
    config = transformers.MarianConfig(
        vocab_size=tokenizer.vocab_size, d_model=24, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=pad, eos_token_id=0,
        decoder_start_token_id=pad,
    )  # fmt: skip
    torch.manual_seed(0)
    randomise(transformers.MarianMTModel(config)).save_pretrained(tmp_path / "hf")
    tokenizer.save(tmp_path / "hf")
    return tmp_path / "hf"


def test_translate_cli_runs_on_marian_with_tokenizer_json(
    with_tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("the fox\n\na lazy dog\n")
    assert main(["translate", str(with_tokenizer), str(source), "--max-new-tokens", "6"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # one output per input line
    assert lines[0] and lines[2]


def test_explain_writes_a_report_for_marian(with_tokenizer: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["explain", str(with_tokenizer), "--text", "the fox", "--out", str(out)]) == 0
    assert "<canvas" in out.read_text()


def test_halves_layout_needs_sinusoidal_positions() -> None:
    with pytest.raises(ConfigError, match=r"sinusoidal_layout=.halves. needs positional="):
        tformer.ModelConfig(positional="learned", sinusoidal_layout="halves")
