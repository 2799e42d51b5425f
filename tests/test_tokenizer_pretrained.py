"""Tokenizer features pretrained checkpoints need: chat templates, HF config files, truncation,
and ignoring the padding a tokenizer.json may carry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as Backend
from tokenizers import models, pre_tokenizers

from tformer import Tokenizer

TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def _tokenizer(chat_template: str | None = TEMPLATE) -> Tokenizer:
    vocab = {
        "<s>": 0,
        "</s>": 1,
        "<unk>": 2,
        **{w: i + 3 for i, w in enumerate(["a", "b", "c", "d"])},
    }
    backend = Backend(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return Tokenizer(backend, {"bos": "<s>", "eos": "</s>", "unk": "<unk>"}, chat_template)


def test_chat_template_renders_messages_and_generation_prompt() -> None:
    messages = [{"role": "user", "content": "hi"}]
    text = _tokenizer().apply_chat_template(messages)
    assert text == "<s>user: hi</s>\n<s>assistant: "
    assert (
        not _tokenizer().apply_chat_template(messages, add_generation_prompt=False).endswith(": ")
    )


def test_chat_template_can_reject_a_conversation() -> None:
    with pytest.raises(ValueError, match="chat template: no system role"):
        _tokenizer().apply_chat_template([{"role": "system", "content": "x"}])


def test_missing_chat_template_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no chat template"):
        _tokenizer(None).apply_chat_template([{"role": "user", "content": "hi"}])


def test_save_and_load_keep_chat_template_in_hf_config_file(tmp_path: Path) -> None:
    _tokenizer().save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["chat_template"] == TEMPLATE and config["eos_token"] == "</s>"
    loaded = Tokenizer.load(tmp_path)
    assert loaded.chat_template == TEMPLATE and loaded.special_tokens == _tokenizer().special_tokens


def test_encode_batch_truncates_only_when_asked() -> None:
    tokenizer = _tokenizer()
    assert tokenizer.encode_batch(["a b c d", "a"], max_length=2) == [[3, 4], [3]]
    assert tokenizer.encode_batch(["a b c d"]) == [[3, 4, 5, 6]]


def test_padding_stored_in_tokenizer_json_is_ignored(tmp_path: Path) -> None:
    tokenizer = _tokenizer()
    tokenizer.backend.enable_padding(length=8, pad_id=1, pad_token="</s>")
    tokenizer.backend.save(str(tmp_path / "tokenizer.json"))
    assert Tokenizer.load(tmp_path).encode("a b") == [3, 4]


def test_chat_template_is_read_from_transformers_files(tmp_path: Path) -> None:
    _tokenizer(None).save(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(TEMPLATE)  # transformers >= 4.43
    assert Tokenizer.load(tmp_path).chat_template == TEMPLATE
    (tmp_path / "chat_template.jinja").unlink()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = [
        {"name": "tool_use", "template": "x"},
        {"name": "default", "template": TEMPLATE},
    ]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert Tokenizer.load(tmp_path).chat_template == TEMPLATE
