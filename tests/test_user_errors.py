"""Bad input, tried as a user would (through the `tformer` command): each ends in exactly one
`tformer: error:` line that names the problem, never a traceback; a bug keeps its traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tformer import cli
from tformer.cli import main
from tformer.commands import prepare as prepare_command
from tformer.config import ModelConfig
from tformer.data.prepare import training_pieces
from tformer.models import build_model
from tformer.tokenizer import Tokenizer

SRC = Path(__file__).resolve().parents[1] / "src"


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single `tformer: error:` line on stderr (and nothing else there)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tformer: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny encoder with an embedding head and a character tokenizer, saved as a checkpoint."""
    directory = tmp_path_factory.mktemp("embedder")
    text = directory / "chars.txt"
    text.write_text("abcdefghijklmnopqrstuvwxyz .,", encoding="utf-8")
    tokenizer = Tokenizer.train_char([text])
    config = ModelConfig(
        arch="encoder", head="embedding", d_model=16, n_heads=2, n_layers=1, d_ff=32,
        max_seq_len=64, **tokenizer.config_ids(),
    )  # fmt: skip
    return build_model(config).save_pretrained(directory / "model", tokenizer)


# ---- the command's error handling -----------------------------------------------------------
def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A built-in exception from inside the library is not a user error: it propagates."""

    def broken(_: object) -> None:
        raise KeyError("an internal table lacks an entry")

    monkeypatch.setattr(prepare_command, "run", broken)
    with pytest.raises(KeyError):
        main(["prepare", "x.txt", "--out", "y"])


def test_broken_pipe_ends_quietly() -> None:
    """`tformer embed ... --json | head -c 100`: the reader leaves early; no traceback."""
    code = (
        "import sys\n"
        "from tformer.cli import main\n"
        "from tformer.commands import embed\n"
        "embed.run = lambda args: print('x' * 1_000_000)\n"  # more than a pipe buffers
        "sys.exit(main(['embed', 'MODEL', 'a', '--json']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(100) == b"x" * 100
    process.stdout.close()  # what `head -c 100` does once it has its 100 bytes
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == cli.BROKEN_PIPE_STATUS
    assert stderr == ""


# ---- configuration ------------------------------------------------------------------------
MODEL = {"d_model": "16", "n_heads": "2", "n_layers": "1", "d_ff": "32", "max_seq_len": "16"}
TRAINING = {"max_steps": "1", "progress": "false"}


def _recipe(tmp_path: Path, table: str, key: str, value: str) -> Path:
    """A tiny character-LM recipe with `key = value` (TOML) put into `table`."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 20, encoding="utf-8")
    tables = {
        "model": {"d_model": "16", "n_heads": "2", "n_layers": "1", "d_ff": "32"},
        "data": {"task": '"causal-lm"', "path": f'"{corpus}"', "tokenizer": '"char"'},
        "training": {"max_steps": "1", "progress": "false"},
    }
    tables[table][key] = value
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        "".join(
            f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items())
            for name, entries in tables.items()
        ),
        encoding="utf-8",
    )
    return recipe


@pytest.mark.parametrize(
    ("table", "key", "value", "named"),
    [
        ("model", "d_model", '"big"', "d_model='big' must be an integer (got str)"),
        ("model", "dropout", "true", "dropout=True must be a number (got bool)"),
        ("training", "lr", '"fast"', "[training]: lr='fast' must be a number (got str)"),
        ("training", "batch_size", "2.5", "[training]: batch_size=2.5 must be an integer"),
        ("training", "distributed", '"zero3"', "distributed='zero3'; choose one of ddp, fsdp"),
        ("data", "block_size", '"8"', "[data]: block_size='8' must be an integer or None"),
    ],
)
def test_recipe_value_of_wrong_type_names_field_value_and_type(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    table: str,
    key: str,
    value: str,
    named: str,
) -> None:
    recipe = _recipe(tmp_path, table, key, value)
    assert main(["train", "--out", str(tmp_path / "run"), str(recipe)]) == 2
    assert named in _one_error_line(capsys)


# ---- text files -----------------------------------------------------------------------------
def test_prepare_rejects_a_binary_file_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "model.txt"
    binary.write_bytes(b"first line\nsecond\x00\x00\x01 line\n")
    assert main(["prepare", str(binary), "--out", str(tmp_path / "out")]) == 2
    assert f"{binary}:2: contains a NUL byte" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_embed_rejects_a_binary_file_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], embedder: Path
) -> None:
    binary = tmp_path / "sentences.txt"
    binary.write_bytes("one\ntwo\nthree\x00\n".encode("utf-16-le"))  # UTF-16: NULs everywhere
    assert main(["embed", str(embedder), "--file", str(binary)]) == 2
    assert f"{binary}:1: contains a NUL byte" in _one_error_line(capsys)


def test_training_pieces_are_bounded_cut_at_spaces_and_lose_nothing() -> None:
    text = "word " * 700 + "x" * 2500
    pieces = list(training_pieces(["short line\n", text], max_chars=1000))
    assert pieces[0] == "short line\n"
    assert "".join(pieces[1:]) == text
    assert all(len(p) <= 1000 for p in pieces)
    words, run = pieces[1:5], pieces[5:]
    assert all(p.endswith("word") for p in words)  # cut before a space while there is one
    assert [len(p) for p in run] == [1000, 1000, 501]  # " x...x", then hard cuts in the run


def test_prepare_bpe_on_one_long_line_without_spaces_finishes_quickly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One 300,000-character word made the BPE trainer rescan it at every merge, for minutes
    (the time grows with the square of its length); in bounded pieces it takes a moment."""
    line = tmp_path / "line.txt"
    line.write_text("a" * 300_000, encoding="utf-8")
    start = time.perf_counter()
    args = ["prepare", str(line), "--out", str(tmp_path / "out"), "--tokenizer", "bpe"]
    assert main([*args, "--vocab-size", "300"]) == 0
    assert time.perf_counter() - start < 30
    assert "train" in capsys.readouterr().out


# ---- checkpoints ----------------------------------------------------------------------------
def test_malformed_config_json_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], embedder: Path
) -> None:
    for directory, text in (
        (tmp_path / "hf", '{"model_type": "bert"\n "hidden_size": 8}'),
        (tmp_path / "ours", (embedder / "config.json").read_text()[:-5]),
    ):
        directory.mkdir()
        (directory / "config.json").write_text(text)
        assert main(["embed", str(directory), "hello"]) == 2
        line = _one_error_line(capsys)
        assert f"{directory / 'config.json'}: invalid JSON" in line


def test_truncated_gguf_names_the_file_and_the_tensor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.ones((64, 32), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 32 * 4 - 100])  # the norm entirely, 100 bytes of embd
    assert main(["generate", str(path), "--prompt", "a"]) == 2
    line = _one_error_line(capsys)
    assert f"{path} is truncated or corrupted" in line and "'token_embd.weight'" in line
