"""Supervised fine-tuning data: labels only on the assistant's tokens (checked against masks
written out by hand), bad rows reported by file and line, and packing that changes nothing:
a packed row gives each example the loss it has alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from tformer.config import ModelConfig
from tformer.data import build_task_data
from tformer.data.collate import SFTCollator
from tformer.data.sft import (
    conversation_tokens,
    pack_examples,
    prompt_completion_tokens,
    to_example,
)
from tformer.errors import ConfigError, InputError
from tformer.models import build_model
from tformer.models.heads import IGNORE_INDEX
from tformer.tokenizer import Tokenizer

# One letter of the role, a colon, the content, a bar; the generation prompt is "a:".
TEMPLATE = (
    "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}|{% endfor %}"
    "{% if add_generation_prompt %}a:{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "yo"},
    {"role": "user", "content": "ok"},
    {"role": "assistant", "content": "no"},
]
GOOD_ROW = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


@pytest.fixture
def char_tokenizer(tmp_path: Path) -> Tokenizer:
    """One id per character of the conversation's rendering (and the default specials)."""
    (tmp_path / "chars.txt").write_text("s:S|u:hi|a:yo|u:ok|a:no|ab cd", encoding="utf-8")
    tokenizer = Tokenizer.train_char([tmp_path / "chars.txt"])
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def _shown(tokenizer: Tokenizer, labels: list[int]) -> str:
    """Labels as text, "_" where ignored (one character per id for a char tokenizer)."""
    return "".join("_" if t == IGNORE_INDEX else tokenizer.decode([t]) for t in labels)


def test_labels_cover_the_assistant_turns_and_their_end_marks_only(char_tokenizer) -> None:
    ids, trained = conversation_tokens(char_tokenizer, CONVERSATION, Path("x.jsonl"), 1)
    assert char_tokenizer.decode(ids) == "s:S|u:hi|a:yo|u:ok|a:no|"
    # by hand:  s:S|u:hi|a:yo|u:ok|a:no|
    expected = "000000000001110000000111"
    assert "".join(str(int(t)) for t in trained) == expected
    inputs, labels = to_example(ids, trained, 64, Path("x.jsonl"), 1, truncate=False)
    assert char_tokenizer.decode(inputs) == "s:S|u:hi|a:yo|u:ok|a:no"
    # labels[t] is the token after inputs[t]: ":S|u:hi|a:" then "yo|" ...
    assert _shown(char_tokenizer, labels) == "__________yo|_______no|"


def test_prompt_completion_trains_the_completion_and_eos(char_tokenizer) -> None:
    ids, trained = prompt_completion_tokens(char_tokenizer, "ab", " cd")
    eos = char_tokenizer.token_id("eos")
    assert ids == [*char_tokenizer.encode("ab cd"), eos]
    inputs, labels = to_example(ids, trained, 64, Path("x.jsonl"), 1, truncate=False)
    assert inputs == char_tokenizer.encode("ab cd")
    assert labels == [IGNORE_INDEX, *char_tokenizer.encode(" cd"), eos]


def test_a_template_that_rewrites_earlier_turns_is_refused(char_tokenizer) -> None:
    # shows only the last assistant turn: earlier renderings are no prefix of the whole
    char_tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
        "{{ m['role'][0] }}:{{ m['content'] }}|{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}a:{% endif %}"
    )
    with pytest.raises(InputError, match=r"x.jsonl:7: message 3: .* prefix of the whole"):
        conversation_tokens(char_tokenizer, CONVERSATION, Path("x.jsonl"), 7)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _build(path: Path, max_seq_len: int = 128, **options) -> object:
    table = {"task": "sft", "path": str(path), "tokenizer": "char", "chat_template": "chatml"}
    return build_task_data(table | options, path.parent, [], max_seq_len)


def _chat(*messages: dict) -> str:
    return json.dumps({"messages": list(messages)})


USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"messages": [', "invalid JSON"),
        ("[1, 2]", "each line must be a JSON object"),
        (_chat({"content": "hi"}, {"role": "assistant", "content": "yo"}), "message 1 has no role"),
        (_chat({"role": "bot", "content": "hi"}), "message 1 has role 'bot'; use one of"),
        (_chat(USER, {"role": "assistant", "content": "  "}), "message 2 is an empty assistant"),
        (_chat(USER), "the conversation has no assistant turn"),
        (_chat(USER, {"role": "assistant", "content": 3}), "message 2's content must be a"),
        (json.dumps({"messages": []}), "'messages' must be a non-empty list"),
        (json.dumps({"prompt": "a"}), "a row needs 'messages', or 'prompt' and 'completion'"),
        (json.dumps({"prompt": "a", "completion": ""}), "the completion is empty"),
        (_chat(USER, {"role": "assistant", "content": "yo" * 100}), "longer than the model allows"),
    ],
)
def test_a_bad_row_is_an_input_error_naming_file_and_line(tmp_path, line, problem) -> None:
    path = _write(tmp_path / "chat.jsonl", [json.dumps(GOOD_ROW), "", line, json.dumps(GOOD_ROW)])
    with pytest.raises(InputError) as error:
        _build(path)
    assert str(error.value).startswith(f"{path}:3: ")
    assert problem in str(error.value)


def test_over_long_examples_are_cut_to_the_block_when_truncate_is_set(tmp_path) -> None:
    long_row = _chat(USER, {"role": "assistant", "content": "yo" * 100})
    path = _write(tmp_path / "chat.jsonl", [json.dumps(GOOD_ROW), long_row, json.dumps(GOOD_ROW)])
    data = _build(path, truncate=True, val_fraction=0.3)
    lengths = sorted(len(inputs) for pack in [*data.train, *data.val] for inputs, _ in pack)
    assert lengths[-1] == 128 and lengths[0] < 128


def test_truncation_that_leaves_no_assistant_token_is_refused(tmp_path) -> None:
    long_prompt = _chat(
        {"role": "user", "content": "hi" * 100}, {"role": "assistant", "content": "yo"}
    )
    path = _write(tmp_path / "chat.jsonl", [json.dumps(GOOD_ROW), long_prompt])
    with pytest.raises(InputError, match=r"chat.jsonl:2: no assistant/completion token is left"):
        _build(path, truncate=True)


def test_conversations_need_a_chat_template_for_a_trained_tokenizer(tmp_path) -> None:
    path = _write(tmp_path / "chat.jsonl", [json.dumps(GOOD_ROW)] * 3)
    with pytest.raises(ConfigError, match='set chat_template = "chatml"'):
        _build(path, chat_template=None)


def test_next_fit_packing_closes_a_row_when_the_next_example_does_not_fit() -> None:
    examples = [([0] * n, [0] * n) for n in (3, 4, 2, 5)]
    lengths = [[len(e[0]) for e in pack] for pack in pack_examples(examples, 7)]
    assert lengths == [[3, 4], [2, 5]]
    lengths = [[len(e[0]) for e in pack] for pack in pack_examples(examples, 6)]
    assert lengths == [[3], [4, 2], [5]]


def test_packed_rows_restart_positions_and_number_their_examples() -> None:
    packs = [[([5, 6], [6, 7]), ([8, 9, 10], [9, 10, 11])], [([1], [2])]]
    batch = SFTCollator(pad_id=0, packed=True)(packs, torch.Generator())
    assert batch["input_ids"].tolist() == [[5, 6, 8, 9, 10], [1, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[6, 7, 9, 10, 11], [2, -100, -100, -100, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1, 2], [0, 0, 0, 0, 0]]
    assert batch["segment_ids"].tolist() == [[0, 0, 1, 1, 1], [0, -1, -1, -1, -1]]
    unpacked = SFTCollator(pad_id=0, packed=False)([packs[1]], torch.Generator())
    assert set(unpacked) == {"input_ids", "labels"}


LLAMA_LIKE = {"positional": "rotary", "norm": "rmsnorm", "activation": "swiglu", "bias": False}


@pytest.mark.parametrize("changes", [{}, LLAMA_LIKE], ids=["learned-positions", "rotary"])
def test_a_packed_row_gives_each_example_its_unpacked_loss(changes) -> None:
    config = ModelConfig.preset("tiny-decoder").replace(**changes)
    model = build_model(config).eval()
    generator = torch.Generator().manual_seed(0)
    examples = []
    for length in (5, 9, 3, 7):
        ids = torch.randint(3, config.vocab_size, (length + 1,), generator=generator).tolist()
        trained = [i >= length // 2 for i in range(length + 1)]
        examples.append(to_example(ids, trained, 64, Path("x"), 1, truncate=False))

    def example_losses(packs: list, packed: bool) -> list[float]:
        batch = SFTCollator(pad_id=0, packed=packed)(packs, torch.Generator())
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits
        per_token = F.cross_entropy(
            logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
        )
        losses, offset = [], 0
        for row, pack in enumerate(packs):
            offset = 0
            for inputs, _ in pack:
                losses.append(per_token[row, offset : offset + len(inputs)].sum().item())
                offset += len(inputs)
        return losses

    alone = example_losses([[e] for e in examples], packed=False)
    packed = example_losses(pack_examples(examples, 16), packed=True)
    assert len(pack_examples(examples, 16)) == 2  # (5 + 9) and (3 + 7): really packed
    assert max(abs(a - p) for a, p in zip(alone, packed, strict=True)) <= 1e-5
