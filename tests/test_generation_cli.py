"""`tformer generate` and `tformer translate`: what they print equals the library's output."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from test_generation import tiny  # the same test-sized models
from tformer import Tokenizer
from tformer.cli import main
from tformer.generation import generate, stream_text

TEXT = "the quick brown fox jumps over the lazy dog\nhello world\n"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    corpus = tmp_path_factory.mktemp("corpus") / "text.txt"
    corpus.write_text(TEXT)
    return Tokenizer.train_char([corpus])


def save_tiny(tmp_path: Path, tokenizer: Tokenizer | None, arch: str, name: str) -> Path:
    """A tiny model saved with `tokenizer` (whose ids it uses) or, if None, without one."""
    ids = tokenizer.config_ids() if tokenizer is not None else {}
    return tiny(arch, max_seq_len=48, **ids).save_pretrained(tmp_path / name, tokenizer)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def reference_text(path: Path, tokenizer: Tokenizer, prompt: str, **options: object) -> str:
    import tformer

    model, _ = tformer.load(path)
    ids = torch.tensor([tokenizer.encode(prompt)])
    row = generate(model, ids, **options)[0].tolist()  # type: ignore[arg-type]
    end = {model.config.eos_id, model.config.pad_id}
    kept = row[: next((i for i, t in enumerate(row) if t in end), len(row))]
    return tokenizer.decode(kept)


def test_generate_prints_the_library_continuation(tmp_path, tokenizer, capsys) -> None:
    path = save_tiny(tmp_path, tokenizer, "decoder", "lm")
    code, out, _ = run_cli(
        ["generate", str(path), "--prompt", "the", "--max-new-tokens", "12"], capsys
    )
    assert code == 0
    assert out == reference_text(path, tokenizer, "the", max_new_tokens=12) + "\n"
    code, streamed, _ = run_cli(
        ["generate", str(path), "--prompt", "the", "--max-new-tokens", "12", "--stream"], capsys
    )
    assert (code, streamed) == (0, out)


def test_generate_with_prompt_lookup_prints_the_greedy_continuation(
    tmp_path, tokenizer, capsys
) -> None:
    path = save_tiny(tmp_path, tokenizer, "decoder", "lm")
    prompt = ["--prompt", "the lazy dog, the lazy dog, the lazy"]
    args = ["generate", str(path), *prompt, "--max-new-tokens", "20"]
    code, plain, _ = run_cli(args, capsys)
    assert code == 0
    assert run_cli([*args, "--prompt-lookup", "4"], capsys) == (0, plain, "")
    assert run_cli([*args, "--prompt-lookup", "4", "--stream"], capsys) == (0, plain, "")
    code, _, err = run_cli([*args, "--prompt-lookup", "4", "--top-p", "0.9"], capsys)
    assert code != 0 and err.count("\n") == 1 and "greedy" in err


def test_generate_with_a_draft_model_prints_the_greedy_continuation(
    tmp_path, tokenizer, capsys
) -> None:
    path = save_tiny(tmp_path, tokenizer, "decoder", "lm")
    args = ["generate", str(path), "--prompt", "the lazy", "--max-new-tokens", "20"]
    code, plain, _ = run_cli(args, capsys)
    assert code == 0
    assert run_cli([*args, "--draft", str(path), "--draft-tokens", "3"], capsys) == (0, plain, "")
    code, _, err = run_cli([*args, "--draft", str(path), "--draft-tokens", "0"], capsys)
    assert code != 0 and err.count("\n") == 1 and "draft_tokens > 0" in err


def test_generate_batch_and_seeded_sampling(tmp_path, tokenizer, capsys) -> None:
    path = save_tiny(tmp_path, tokenizer, "decoder", "lm")
    args = ["generate", str(path), "--prompt", "hello", "--prompt", "the fox", "--top-p", "0.9"]
    code, out, _ = run_cli([*args, "--seed", "4"], capsys)
    assert code == 0 and len(out.splitlines()) == 2
    assert run_cli([*args, "--seed", "4"], capsys)[1] == out


def stdin_bytes(data: bytes) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")


def test_translate_rejects_bad_input_before_decoding_any_line(
    tmp_path, tokenizer, capsys, monkeypatch
) -> None:
    """Non-UTF-8 text, a line past the context and a bad option each end in one error line
    that names the problem (and the line), before any output."""
    path = save_tiny(tmp_path, tokenizer, "encoder-decoder", "mt")
    cases = [
        (b"hello\ncaf\xe9\n", [], "<stdin>:2: not valid UTF-8 (byte 0xe9)"),
        (b"hello\n" + b"the dog " * 10 + b"\n", [], "input line 2 has 80 tokens"),
        (b"\n", ["--beams", "0"], "num_beams=0 must be >= 1"),
    ]
    for data, options, message in cases:
        monkeypatch.setattr("sys.stdin", stdin_bytes(data))
        code, out, err = run_cli(["translate", str(path), *options], capsys)
        assert (code, out) == (2, "")
        assert message in err and len(err.splitlines()) == 1
    bad_file = tmp_path / "latin1.txt"
    bad_file.write_bytes(b"caf\xe9\n")
    code, _, err = run_cli(["translate", str(path), str(bad_file)], capsys)
    assert code == 2 and f"{bad_file}:1: not valid UTF-8" in err


def test_translate_writes_one_line_per_input_line(tmp_path, tokenizer, capsys, monkeypatch) -> None:
    path = save_tiny(tmp_path, tokenizer, "encoder-decoder", "mt")
    lines = ["hello world", "", "the lazy dog jumps"]
    monkeypatch.setattr("sys.stdin", stdin_bytes(("\n".join(lines) + "\n").encode()))
    code, out, _ = run_cli(["translate", str(path), "--max-new-tokens", "10"], capsys)
    assert code == 0
    expected = [
        reference_text(path, tokenizer, line, max_new_tokens=10, num_beams=4) if line else ""
        for line in lines
    ]
    assert out.split("\n")[:-1] == expected
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n")
    code, from_file, _ = run_cli(
        ["translate", str(path), str(source), "--max-new-tokens", "10"], capsys
    )
    assert (code, from_file) == (0, out)


def test_cli_errors_are_one_line(tmp_path, tokenizer, capsys) -> None:
    no_tokenizer = save_tiny(tmp_path, None, "decoder", "bare")
    code, _, err = run_cli(["generate", str(no_tokenizer), "--prompt", "x"], capsys)
    assert code == 2 and "has no tokenizer" in err
    lm = save_tiny(tmp_path, tokenizer, "decoder", "lm")
    code, _, err = run_cli(["translate", str(lm)], capsys)
    assert code == 2 and "not an encoder-decoder" in err
    code, _, err = run_cli(["generate", str(lm), "--prompt", "the", "--top-p", "1.5"], capsys)
    assert code == 2 and "top_p" in err
    code, _, err = run_cli(
        ["generate", str(lm), "--prompt", "a", "--prompt", "b", "--stream"], capsys
    )
    assert code == 2 and "single --prompt" in err


def test_stop_strings_end_a_row_after_the_completing_token(tmp_path, tokenizer) -> None:
    import tformer

    model, _ = tformer.load(save_tiny(tmp_path, tokenizer, "decoder", "lm"))
    ids = torch.tensor([tokenizer.encode("the"), tokenizer.encode("dog")])
    free = generate(model, ids, max_new_tokens=12, eos_token_id=[])
    stop = tokenizer.decode(free[0, 3:5].tolist())  # text of row 0's 4th and 5th tokens
    out = generate(
        model, ids, max_new_tokens=12, eos_token_id=[], stop_strings=stop, tokenizer=tokenizer
    )
    texts = [tokenizer.decode(row[:i].tolist()) for row in free for i in range(1, 13)]
    first_hit = next(i for i in range(1, 13) if stop in texts[i - 1])
    assert first_hit <= 5
    assert torch.equal(out[0, :first_hit], free[0, :first_hit])
    assert (out[0, first_hit:] == model.config.pad_id).all()
    row1_hits = [i for i in range(1, 13) if stop in texts[12 + i - 1]]
    end1 = row1_hits[0] if row1_hits else 12
    assert torch.equal(out[1, :end1], free[1, :end1])


def test_stream_text_pieces_join_to_the_decoded_text(tmp_path) -> None:
    corpus = tmp_path / "text.txt"
    corpus.write_text("plain ascii words " * 40)  # unseen characters stay split into bytes
    bpe = Tokenizer.train_bpe([corpus], vocab_size=300)
    ids = bpe.encode("naïve 日本 🙂 café words")
    assert any("\ufffd" in bpe.decode(ids[:i]) for i in range(len(ids)))  # split characters
    pieces = list(stream_text(bpe, ids))
    assert "".join(pieces) == bpe.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)


def test_stream_text_joins_word_pieces_and_spaces_as_the_whole_decode(tmp_path) -> None:
    """WordPiece merges "##" pieces into the word before and puts spaces between words:
    each piece is decoded with the token before it, so the joined pieces are the text."""
    corpus = tmp_path / "text.txt"
    corpus.write_text("the unbelievable understanding of undoing things , again .\n" * 30)
    wordpiece = Tokenizer.train_wordpiece([corpus], vocab_size=60)
    ids = wordpiece.encode("the unbelievable undoing , understanding again .")
    assert any(wordpiece.backend.id_to_token(i).startswith("##") for i in ids)
    assert "".join(stream_text(wordpiece, ids)) == wordpiece.decode(ids)


def test_generate_chat_uses_the_tokenizer_template(tmp_path, tokenizer, capsys) -> None:
    pytest.importorskip("jinja2")
    import copy

    templated = copy.copy(tokenizer)
    templated.chat_template = "{% for m in messages %}user: {{ m['content'] }}\n{% endfor %}"
    path = save_tiny(tmp_path, templated, "decoder", "chat")
    code, out, _ = run_cli(
        ["generate", str(path), "--chat", "hello", "--max-new-tokens", "8"], capsys
    )
    assert code == 0
    assert out == reference_text(path, tokenizer, "user: hello\n", max_new_tokens=8) + "\n"


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_generate_with_quantized_weights_prints_the_quantized_models_continuation(
    tmp_path, tokenizer, capsys, scheme
) -> None:
    import tformer
    from tformer.quantize import QUANTIZERS

    path = save_tiny(tmp_path, tokenizer, "decoder", "lm")
    command = ["generate", str(path), "--prompt", "the", "--max-new-tokens", "8"]
    code, out, _ = run_cli([*command, "--quantize", scheme], capsys)
    model = QUANTIZERS[scheme](tformer.load(path)[0])
    row = generate(model, torch.tensor([tokenizer.encode("the")]), max_new_tokens=8)[0].tolist()
    end = {model.config.eos_id, model.config.pad_id}
    kept = row[: next((i for i, t in enumerate(row) if t in end), len(row))]
    assert (code, out) == (0, tokenizer.decode(kept) + "\n")


def test_generate_goes_past_the_models_context(tmp_path, tokenizer, capsys) -> None:
    """60 new tokens from a 48-position model, as nanoGPT samples past its block size; a
    sampling option samples, as it does in the library."""
    ids = tokenizer.config_ids() | {"eos_id": None}  # no end of text: all 60 are made
    path = tiny("decoder", max_seq_len=48, **ids).save_pretrained(tmp_path / "lm", tokenizer)
    options = ["--max-new-tokens", "60", "--temperature", "0.8", "--seed", "1"]
    code, out, _ = run_cli(["generate", str(path), "--prompt", "the", *options], capsys)
    assert code == 0
    expected = reference_text(path, tokenizer, "the", max_new_tokens=60, temperature=0.8, seed=1)
    assert out == expected + "\n"  # the library made all 60 (test_generation checks how)
    code, _, err = run_cli(
        ["generate", str(path), "--prompt", "the", "--beams", "2", *options[:2]], capsys
    )
    assert code == 2 and "beam search and static caches do not slide" in err
