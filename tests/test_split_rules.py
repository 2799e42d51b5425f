"""llama.cpp's split rules by name (`tokenizer.ggml.pre`), on hand-worked pieces; that
llama.cpp itself tokenises the same way is `test_gguf_export_llama_cpp.py`'s check."""

from __future__ import annotations

import pytest

from tformer.errors import InputError
from tformer.pretrained.split_rules import GPT2_RULES, split_rules

TEXT = "It's 1234567 cats\n\n  ok"
PIECES = {  # the byte-level mapping spells " " as "Ġ" and "\n" as "Ċ"
    "gpt-2": ["It", "'s", "Ġ1234567", "Ġcats", "ĊĊĠ", "Ġok"],
    "smollm": ["It", "'s", "Ġ", "1", "2", "3", "4", "5", "6", "7", "Ġcats", "ĊĊĠ", "Ġok"],
    "llama-bpe": ["It", "'s", "Ġ", "123", "456", "7", "Ġcats", "ĊĊ", "Ġ", "Ġok"],
    "qwen2": ["It", "'s", "Ġ", "1", "2", "3", "4", "5", "6", "7", "Ġcats", "ĊĊ", "Ġ", "Ġok"],
}


@pytest.mark.parametrize("pre", sorted(PIECES))
def test_each_name_cuts_text_as_llama_cpp_describes(pre: str) -> None:
    pieces = split_rules(pre).pre_tokenizer().pre_tokenize_str(TEXT)
    assert [piece for piece, _ in pieces] == PIECES[pre]


def test_llama3_takes_a_piece_that_is_a_token_whole() -> None:
    assert split_rules("llama-bpe").ignore_merges and not split_rules("smollm").ignore_merges


def test_a_file_without_the_key_gets_gpt2s_rules_and_an_unknown_name_is_refused() -> None:
    assert split_rules(None) is GPT2_RULES
    with pytest.raises(InputError, match=r"'tekken'.*not supported.*smollm"):
        split_rules("tekken")
