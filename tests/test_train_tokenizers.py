"""Training tokenizers (char, byte-level BPE, WordPiece) and their special tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from tformer import Tokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_char_tokenizer_has_one_token_per_character_and_round_trips(corpus: Path) -> None:
    tokenizer = Tokenizer.train_char([corpus])
    assert tokenizer.vocab_size == len(set(TEXT)) + 7  # 7 special tokens
    ids = tokenizer.encode("hear me")
    assert len(ids) == len("hear me")
    assert tokenizer.decode(ids) == "hear me"


def test_bpe_tokenizer_round_trips_unseen_text(corpus: Path) -> None:
    tokenizer = Tokenizer.train_bpe([corpus], vocab_size=300)
    text = "Ünseen wörds & emoji 🎭 too"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_wordpiece_wraps_in_cls_and_sep(corpus: Path) -> None:
    tokenizer = Tokenizer.train_wordpiece([corpus], vocab_size=200)
    ids = tokenizer.encode("hear me")
    assert ids[0] == tokenizer.token_id("cls") and ids[-1] == tokenizer.token_id("sep")


def test_special_token_ids_fill_the_model_config(corpus: Path, tmp_path: Path) -> None:
    tokenizer = Tokenizer.train_char([corpus])
    tokenizer.save(tmp_path / "tok")
    loaded = Tokenizer.load(tmp_path / "tok")
    ids = loaded.config_ids()
    assert ids["vocab_size"] == tokenizer.vocab_size
    assert {ids["pad_id"], ids["bos_id"], ids["eos_id"], ids["mask_id"]} == {
        tokenizer.token_id(role) for role in ("pad", "bos", "eos", "mask")
    }
    assert None not in ids.values()
