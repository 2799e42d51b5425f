"""The checkpoint directory: lossless round-trips, clear errors, never a half-written save."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tformer
from tformer import CheckpointError, DecoderOnlyLM, EncoderModel, ModelConfig, build_model
from tformer.checkpoint import WEIGHTS_FILE

PRESETS = ["tiny-decoder", "tiny-encoder", "tiny-seq2seq"]


def _outputs(model: tformer.TformerModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if model.config.arch == "encoder-decoder":
            return model(ids, ids).logits
        return model(ids).logits


@pytest.mark.parametrize("preset", PRESETS)
def test_save_then_load_gives_identical_outputs(tmp_path: Path, preset: str) -> None:
    model = build_model(ModelConfig.preset(preset)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = tformer.TformerModel.from_pretrained(tmp_path / "ckpt")
    assert type(loaded) is type(model) and loaded.config == model.config
    ids = torch.randint(4, 61, (2, 9))
    assert torch.equal(_outputs(loaded, ids), _outputs(model, ids))


def test_tied_embedding_is_stored_once_and_stays_tied(tmp_path: Path) -> None:
    model = build_model(ModelConfig.preset("tiny-decoder"))
    model.save_pretrained(tmp_path)
    loaded = tformer.TformerModel.from_pretrained(tmp_path)
    assert isinstance(loaded, DecoderOnlyLM)
    assert loaded.lm_head.proj.weight is loaded.decoder.embeddings.tokens.weight


def test_wrong_shape_names_the_tensor_and_both_shapes(tmp_path: Path) -> None:
    build_model(ModelConfig.preset("tiny-decoder", d_ff=128)).save_pretrained(tmp_path)
    small = build_model(ModelConfig.preset("tiny-decoder"))
    weights = tformer.checkpoint.read_weights(tmp_path)
    with pytest.raises(
        CheckpointError,
        match=r"ffn\.up\.weight: shape \(128, 32\) in file, model expects \(64, 32\)",
    ):
        tformer.checkpoint.load_weights(small, weights, str(tmp_path))


def test_truncated_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    build_model(ModelConfig.preset("tiny-encoder")).save_pretrained(tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        tformer.TformerModel.from_pretrained(tmp_path)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is not a tformer checkpoint"):
        tformer.TformerModel.from_pretrained(tmp_path / "nowhere")


def test_loading_into_the_wrong_family_says_which_class_to_use(tmp_path: Path) -> None:
    build_model(ModelConfig.preset("tiny-decoder")).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="holds a DecoderOnlyLM"):
        EncoderModel.from_pretrained(tmp_path)


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "ckpt"
    first = build_model(ModelConfig.preset("tiny-decoder"))
    first.save_pretrained(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def crash(*args: object, **kwargs: object) -> None:
        (Path(args[1]).parent / "partial").write_text("half a file")
        raise OSError("disk full")

    monkeypatch.setattr(tformer.checkpoint, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        build_model(ModelConfig.preset("tiny-decoder")).save_pretrained(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary directory left


def test_tokenizer_is_saved_with_the_model(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be\n")
    tokenizer = tformer.Tokenizer.train_char([corpus])
    model = build_model(ModelConfig.preset("tiny-decoder", vocab_size=tokenizer.vocab_size))
    model.save_pretrained(tmp_path / "ckpt", tokenizer=tokenizer)
    _, loaded = tformer.load(tmp_path / "ckpt")
    assert loaded is not None
    assert loaded.decode(loaded.encode("not to be")) == "not to be"
