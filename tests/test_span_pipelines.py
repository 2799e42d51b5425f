"""Entity recognition and question answering against `transformers` with the same random
weights and the same tokenizer: entities against its token-classification pipeline
(aggregation_strategy="first"), answers against the span scoring of its question-answering
pipeline (`select_starts_ends`, kept in transformers 5, which dropped the pipeline itself)
on the windows its tokenizer makes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import tformer  # noqa: E402
from tformer.cli import main  # noqa: E402
from tformer.errors import InputError  # noqa: E402
from tformer.pipelines import answer_question, ner  # noqa: E402
from tformer.pipelines.ner import TaggedWord, group_entities, tag_words  # noqa: E402

CORPUS = (
    "Ada Lovelace wrote the first program for Charles Babbage's Analytical Engine in London.\n"
    "Grace Hopper built compilers for the UNIVAC at Remington Rand in Philadelphia.\n"
    "Alan Turing worked at Bletchley Park and later at the University of Manchester.\n"
    "The engine was never finished, but the notes survive in the British Library.\n"
)
TEXTS = [
    "Ada Lovelace met Charles Babbage in London.",
    "Grace Hopper's compilers ran on the UNIVAC; Turing's machine did not exist.",
    "unbelievably, interoperability... works",
    "Bletchley",
]
TAGS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "MISC"}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small WordPiece vocabulary: most words of TEXTS split into several pieces."""
    root = tmp_path_factory.mktemp("tokenizer")
    (root / "corpus.txt").write_text(CORPUS)
    tokenizer = tformer.Tokenizer.train_wordpiece([root / "corpus.txt"], vocab_size=120)
    tokenizer.save(root / "tok")
    return root / "tok"


def _save(model: torch.nn.Module, tokenizer_dir: Path, directory: Path) -> Path:
    torch.manual_seed(1)
    with torch.no_grad():  # sharper than the initialisation, so tags and spans differ
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.eval().save_pretrained(directory)
    for file in tokenizer_dir.iterdir():
        (directory / file.name).write_bytes(file.read_bytes())
    return directory


def _bert_config(tokenizer_dir: Path, **extra: object) -> transformers.BertConfig:
    vocab = tformer.Tokenizer.load(tokenizer_dir).vocab_size
    return transformers.BertConfig(
        vocab_size=vocab, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=40, max_position_embeddings=64, **extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tagger_dir(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = _bert_config(tokenizer_dir, id2label=TAGS, label2id={v: k for k, v in TAGS.items()})
    model = transformers.BertForTokenClassification(config)
    return _save(model, tokenizer_dir, tmp_path_factory.mktemp("tagger"))


@pytest.fixture(scope="module")
def reader_dir(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = transformers.BertForQuestionAnswering(_bert_config(tokenizer_dir, num_labels=2))
    return _save(model, tokenizer_dir, tmp_path_factory.mktemp("reader"))


# ---- named entities --------------------------------------------------------------------
def test_entities_match_transformers_first_strategy(tagger_dir: Path) -> None:
    reference = transformers.pipeline(
        "token-classification", model=str(tagger_dir), aggregation_strategy="first"
    )
    model, tokenizer = tformer.load(tagger_dir)
    found = ner(model, tokenizer, TEXTS, batch_size=3)
    assert sum(len(e) for e in found) >= 4  # the test is not vacuous
    for text, ours in zip(TEXTS, found, strict=True):
        theirs = reference(text)
        assert [(e.label, e.start, e.end) for e in ours] == [
            (e["entity_group"], e["start"], e["end"]) for e in theirs
        ]
        assert [e.text for e in ours] == [text[e.start : e.end] for e in ours]
        np.testing.assert_allclose(
            [e.score for e in ours], [e["score"] for e in theirs], rtol=1e-5, atol=1e-6
        )


def test_a_word_takes_its_first_pieces_tag_and_spans_all_its_pieces(
    tokenizer_dir: Path,
) -> None:
    tokenizer = tformer.Tokenizer.load(tokenizer_dir)
    text = "Ada Lovelace met"
    encoding = tokenizer.encodings([text])[0]
    tokens = encoding.tokens  # [CLS] pieces... [SEP]
    assert any(t.startswith("##") for t in tokens)  # some word is split
    tags = ("O", "B-PER", "I-PER")
    probs = torch.full((len(tokens), 3), 0.1)
    for i, token in enumerate(tokens):  # later pieces vote "O" strongly; only firsts count
        probs[i, 0 if token.startswith("##") else 1] = 0.8
    words = tag_words(encoding, probs, tags)
    assert [(w.tag, text[w.start : w.end]) for w in words] == [
        ("B-PER", "Ada"), ("B-PER", "Lovelace"), ("B-PER", "met"),
    ]  # fmt: skip
    assert all(w.score == pytest.approx(0.8) for w in words)


def test_iob_tags_group_into_entities_by_hand() -> None:
    text = "Ada Lovelace met Charles Babbage in New York ."
    spans = [(0, 3), (4, 12), (13, 16), (17, 24), (25, 32), (33, 35), (36, 39), (40, 44), (45, 46)]
    tags = ["B-PER", "I-PER", "O", "B-PER", "B-PER", "O", "I-LOC", "I-LOC", "MISC"]
    scores = [0.9, 0.7, 0.5, 0.6, 0.8, 0.5, 0.4, 0.6, 0.3]
    words = [TaggedWord(t, s, e, p) for t, (s, e), p in zip(tags, spans, scores, strict=True)]
    found = [
        (e.label, e.text, e.start, e.end, round(e.score, 6)) for e in group_entities(text, words)
    ]
    assert found == [
        ("PER", "Ada Lovelace", 0, 12, 0.8),  # B- then I- of one type: one entity
        ("PER", "Charles", 17, 24, 0.6),  # B- after B-: a new entity
        ("PER", "Babbage", 25, 32, 0.8),
        ("LOC", "New York", 36, 44, 0.5),  # IOB1: I- may begin an entity
        ("MISC", ".", 45, 46, 0.3),  # a tag without a prefix is its own type
    ]


def test_ner_refuses_a_model_without_a_token_classifier(reader_dir: Path) -> None:
    model, tokenizer = tformer.load(reader_dir)
    with pytest.raises(InputError, match="token-classification head"):
        ner(model, tokenizer, ["Ada"])


def test_ner_command_prints_entities_and_json(
    tagger_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, tokenizer = tformer.load(tagger_dir)
    expected = ner(model, tokenizer, TEXTS[:2])
    assert main(["ner", str(tagger_dir), *TEXTS[:2], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [row["text"] for row in printed] == TEXTS[:2]
    assert [[(e["label"], e["start"], e["end"]) for e in row["entities"]] for row in printed] == [
        [(e.label, e.start, e.end) for e in row] for row in expected
    ]
    assert main(["ner", str(tagger_dir), TEXTS[0]]) == 0
    out = capsys.readouterr().out
    assert all(e.text in out and e.label in out for e in expected[0])


# ---- question answering ----------------------------------------------------------------
QUESTION = "Who built compilers?"
LONG_CONTEXT = " ".join(CORPUS.split("\n")) * 3  # dozens of 40-token windows


def _reference_answer(
    directory: Path, question: str, context: str, max_seq_len: int, doc_stride: int
) -> tuple[str, int, int, float]:
    """transformers' question-answering pipeline as it was: its tokenizer's windows, its
    model, `select_starts_ends` per window, the best span of all, widened to words."""
    from transformers.pipelines.document_question_answering import select_starts_ends

    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.BertForQuestionAnswering.from_pretrained(directory).eval()
    features = tokenizer(
        question, context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
        return_overflowing_tokens=True, return_offsets_mapping=True, return_token_type_ids=True,
        padding="longest",
        return_tensors="pt",
    )  # fmt: skip
    with torch.no_grad():
        out = model(
            input_ids=features["input_ids"],
            attention_mask=features["attention_mask"],
            token_type_ids=features["token_type_ids"],
        )
    best = None
    for i in range(len(features["input_ids"])):
        encoding = features.encodings[i]
        p_mask = np.array([s != 1 for s in encoding.sequence_ids])
        p_mask[0] = False  # the pipeline keeps [CLS] unmasked
        starts, ends, scores, _ = select_starts_ends(
            out.start_logits[i : i + 1].numpy(), out.end_logits[i : i + 1].numpy(),
            p_mask, features["attention_mask"][i].numpy(), max_answer_len=15,
        )  # fmt: skip
        for s, e, score in zip(starts, ends, scores, strict=True):
            if best is None or score > best[0]:
                start = encoding.word_to_chars(encoding.token_to_word(s), 1)[0]
                end = encoding.word_to_chars(encoding.token_to_word(e), 1)[1]
                best = (float(score), start, end)
    assert best is not None
    score, start, end = best
    return context[start:end], start, end, score


@pytest.mark.parametrize(
    ("context", "max_seq_len", "doc_stride"),
    [(CORPUS.split("\n")[1], 64, 16), (LONG_CONTEXT, 40, 12), (LONG_CONTEXT, 33, 0)],
    ids=["one-window", "strided-windows", "no-overlap"],
)
def test_answer_matches_transformers_span_scoring(
    reader_dir: Path, context: str, max_seq_len: int, doc_stride: int
) -> None:
    model, tokenizer = tformer.load(reader_dir)
    text, start, end, score = _reference_answer(
        reader_dir, QUESTION, context, max_seq_len, doc_stride
    )
    answer = answer_question(
        model, tokenizer, QUESTION, context, max_seq_len=max_seq_len, doc_stride=doc_stride,
        batch_size=2,
    )  # fmt: skip
    assert (answer.text, answer.start, answer.end) == (text, start, end)
    assert answer.score == pytest.approx(score, rel=1e-4)


def test_long_context_is_split_into_overlapping_windows(reader_dir: Path) -> None:
    from tformer.data.question_windows import question_windows

    _, tokenizer = tformer.load(reader_dir)
    windows = question_windows(tokenizer, [QUESTION], [LONG_CONTEXT], max_seq_len=40, doc_stride=12)
    assert len(windows) >= 3
    spans = [[o for o, c in zip(w.encoding.offsets, w.context_tokens(), strict=True) if c]
             for w in windows]  # fmt: skip
    for before, after in itertools.pairwise(spans):
        assert before[-12:] == after[:12]  # doc_stride context tokens shared
    assert spans[0][0][0] == 0 and spans[-1][-1][1] == len(LONG_CONTEXT.rstrip())


def test_question_too_long_for_the_window_is_refused(reader_dir: Path) -> None:
    model, tokenizer = tformer.load(reader_dir)
    with pytest.raises(InputError, match=r"question 0 is .* tokens long.*doc_stride=12"):
        answer_question(model, tokenizer, CORPUS, LONG_CONTEXT, max_seq_len=40, doc_stride=12)


def test_qa_command_answers_from_a_context_file(
    reader_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "context.txt").write_text(LONG_CONTEXT)
    model, tokenizer = tformer.load(reader_dir)
    expected = answer_question(
        model, tokenizer, QUESTION, LONG_CONTEXT, max_seq_len=40, doc_stride=12
    )
    args = ["qa", str(reader_dir), "--question", QUESTION, "--context", str(tmp_path / "context.txt"),
            "--max-seq-len", "40", "--doc-stride", "12"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["answer"], printed["start"], printed["end"]) == (
        expected.text, expected.start, expected.end,
    )  # fmt: skip
    assert main(args) == 0
    assert expected.text in capsys.readouterr().out
