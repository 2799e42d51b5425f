"""`tformer.load` recognises what a path holds and says clearly when it is none of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tformer
from tformer import CheckpointError, ModelConfig, build_model

transformers = pytest.importorskip("transformers")


def test_tformer_checkpoint_loads_with_its_tokenizer(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world\n" * 20)
    tokenizer = tformer.Tokenizer.train_char([corpus])
    model = build_model(ModelConfig.preset("tiny-decoder", vocab_size=tokenizer.vocab_size))
    model.save_pretrained(tmp_path / "ckpt", tokenizer)
    loaded, loaded_tokenizer = tformer.load(tmp_path / "ckpt")
    assert loaded.config == model.config
    assert loaded_tokenizer is not None and loaded_tokenizer.encode("hello") == tokenizer.encode(
        "hello"
    )


@pytest.mark.parametrize("with_best", [True, False])
def test_training_run_directory_loads_its_best_else_latest_checkpoint(
    tmp_path: Path, with_best: bool
) -> None:
    """`tformer generate runs/x` works like `tformer evaluate runs/x`: a run directory stands
    for its best checkpoint, or its latest one when no validation picked a best."""
    checkpoints = {}
    names = ["checkpoints/step-00000010", "checkpoints/step-00000020"]
    names += ["best"] if with_best else []
    for seed, name in enumerate(names):
        torch.manual_seed(seed)
        checkpoints[name] = build_model(ModelConfig.preset("tiny-decoder", vocab_size=32))
        checkpoints[name].save_pretrained(tmp_path / "run" / name)
    loaded, _ = tformer.load(tmp_path / "run")
    expected = checkpoints["best" if with_best else "checkpoints/step-00000020"]
    for ours, theirs in zip(loaded.parameters(), expected.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_hf_directory_loads_in_requested_dtype_and_drops_foreign_ids(tmp_path: Path) -> None:
    config = transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=16)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="bos_id=50256, eos_id=50256 outside the vocabulary of 40"):
        model, tokenizer = tformer.load(tmp_path, dtype=torch.bfloat16)
    assert tokenizer is None
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: p / "absent", FileNotFoundError, "no checkpoint at"),
        (lambda p: p, CheckpointError, "has no config.json"),
        (lambda p: (p / "x.bin").write_bytes(b"PK\x03\x04") and p / "x.bin", CheckpointError,
         "neither a GGUF file nor a checkpoint directory"),
    ],
)  # fmt: skip
def test_unrecognised_paths_are_clear_errors(tmp_path: Path, make, error, message) -> None:
    with pytest.raises(error, match=message):
        tformer.load(make(tmp_path))


def test_hf_weights_are_read_one_tensor_at_a_time_when_looked_up(tmp_path: Path) -> None:
    """`read_safetensors` reads headers up front and each tensor only on lookup (so importing
    never holds a second full copy of the weights): its values are safetensors' own, and a
    file damaged after the headers were read fails at the lookup, as a CheckpointError."""
    from safetensors.torch import load_file

    from tformer.pretrained.hf import read_safetensors

    config = transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=16)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    file = tmp_path / "model.safetensors"
    reference = load_file(file)
    tensors = read_safetensors(tmp_path)
    assert sorted(tensors) == sorted(reference)
    for name, value in reference.items():
        assert torch.equal(tensors[name], value)
    file.write_bytes(file.read_bytes()[:64])  # truncated after the headers were read
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        tensors[next(iter(reference))]
