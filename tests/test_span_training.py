"""Training the NER and QA tasks: CoNLL/IOB word-tag files with sub-word tag alignment and
seqeval entity F1; SQuAD-format JSON windows labelled with answer tokens and SQuAD's exact
match / F1. Alignment, labels and metrics by hand; tiny runs on data the tests write."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from tformer.data import DataError
from tformer.data.question_windows import question_windows
from tformer.data.squad import answer_tokens, read_squad
from tformer.data.tagging import align_tags, read_conll
from tformer.models.heads import IGNORE_INDEX
from tformer.pretrained.tokenizers import wordpiece_from_vocab
from tformer.tokenizer import Tokenizer
from tformer.training import load_recipe, train_recipe
from tformer.training.distributed import Distributed
from tformer.training.evaluate_run import evaluate_run
from tformer.training.metrics import read_metrics
from tformer.training.run import TASK_HEADS, build_recipe_model, load_data
from tformer.training.squad_metrics import normalize_answer, squad_scores, token_f1

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "ada", "love", "##lace", "wrote",
         "notes", ".", "who", "?", "paris", "in"]  # fmt: skip


@pytest.fixture
def hand_tokenizer(tmp_path: Path) -> Tokenizer:
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return wordpiece_from_vocab(tmp_path / "vocab.txt")


# ---- NER data ------------------------------------------------------------------------------
def test_first_piece_of_each_word_carries_its_tag_by_hand(hand_tokenizer: Tokenizer) -> None:
    words = ["Ada", "Lovelace", "wrote", "notes", "."]
    encoding = hand_tokenizer.encodings([words], is_pretokenized=True)[0]
    assert encoding.tokens == ["[CLS]", "ada", "love", "##lace", "wrote", "notes", ".", "[SEP]"]
    tags = [1, 2, 0, 0, 0]  # B-PER I-PER O O O
    x = IGNORE_INDEX
    assert align_tags(encoding.word_ids, tags) == [x, 1, 2, x, 0, 0, 0, x]


def test_conll_reader_takes_first_and_last_columns_and_skips_docstart(tmp_path: Path) -> None:
    path = tmp_path / "train.conll"
    path.write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nAda B-PER\n"
    )
    sentences = read_conll(path)
    assert [(s.words, s.tags, s.line) for s in sentences] == [
        (["EU", "rejects"], ["B-ORG", "O"], 3),
        (["Ada"], ["B-PER"], 7),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Ada B-PER\nLovelace\n", r"train.conll:2: expected a word and its tag, got 'Lovelace'"),
        ("Ada B-PER\n\nParis LOC\n", r"train.conll:3: tag 'LOC' is not IOB"),
    ],
)
def test_bad_conll_rows_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "train.conll").write_text(text)
    with pytest.raises(DataError, match=message):
        read_conll(tmp_path / "train.conll")


# ---- QA data -------------------------------------------------------------------------------
def _squad(questions: list[dict], context: str) -> dict:
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": context, "qas": questions}]}]}  # fmt: skip


def test_answer_tokens_are_the_pieces_covering_the_answer_by_hand(
    hand_tokenizer: Tokenizer,
) -> None:
    context = "Ada Lovelace wrote notes in Paris."
    windows = question_windows(hand_tokenizer, ["who?"], [context], max_seq_len=64, doc_stride=8)
    tokens = windows[0].encoding.tokens
    assert tokens[4:8] == ["ada", "love", "##lace", "wrote"]  # [CLS] who ? [SEP] ada ...
    assert answer_tokens(windows[0], ("Lovelace", 4)) == (5, 6)  # both pieces of the word
    assert answer_tokens(windows[0], ("Paris", 27)) == (10, 10)
    assert answer_tokens(windows[0], None) == (0, 0)


def test_an_answer_cut_by_a_window_edge_is_no_answer_there(hand_tokenizer: Tokenizer) -> None:
    context = "Ada Lovelace wrote notes in Paris."
    # 3 specials + 2 question tokens + 3 context tokens per window, 1 shared
    windows = question_windows(hand_tokenizer, ["who?"], [context], max_seq_len=8, doc_stride=1)
    labels = [answer_tokens(w, ("Lovelace", 4)) for w in windows]
    pieces = [w.encoding.tokens[4:-1] for w in windows]
    assert pieces[:2] == [["ada", "love", "##lace"], ["##lace", "wrote", "notes"]]
    assert labels[0] == (5, 6) and labels[1] == (0, 0)  # wholly in the first, cut in the second


def test_squad_answer_not_at_its_start_is_refused_with_the_line(tmp_path: Path) -> None:
    data = _squad(
        [{"id": "q1", "question": "Who?", "answers": [{"text": "Ada", "answer_start": 0}]},
         {"id": "q2", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 3}]}],
        "Ada lives in Paris.",
    )  # fmt: skip
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data, indent=1))
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if '"q2"' in t)
    with pytest.raises(DataError, match=rf"train.json:{line}: question 'q2': answer 'Paris' is "):
        read_squad(path)


# ---- SQuAD metrics -------------------------------------------------------------------------
def test_squad_normalisation_and_scores_by_hand() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    # prediction "eiffel tower paris" vs "eiffel tower": 2 shared, P = 2/3, R = 1
    assert token_f1("the Eiffel Tower, Paris", "Eiffel Tower") == pytest.approx(0.8)
    scores = squad_scores(["The Eiffel tower", "Rome"], [["Eiffel Tower"], ["Paris", "in Rome"]])
    # first: exact; second: best reference "in rome": P = 1, R = 1/2, F1 = 2/3
    assert scores == pytest.approx({"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2})


# ---- tiny runs -----------------------------------------------------------------------------
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus"]
CITIES = ["London", "Paris", "Rome", "Berlin", "Madrid", "Vienna", "Oslo", "Prague"]
RUN = ["--training.max_steps=30", "--training.eval_every=30", "--training.log_every=5",
       "--training.progress=false"]  # fmt: skip


def _recipe(tmp_path: Path, data: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(
        '[model]\npreset = "tiny-encoder"\ndropout = 0.0\n\n'
        f"[data]\n{data}\n"
        '[training]\nbatch_size = 8\nlr = 3e-3\nwarmup_steps = 2\nprecision = "fp32"\n'
        "eval_batches = 4\nseed = 0\n"
    )
    return path


def _losses(run: Path) -> list[float]:
    return [line["loss"] for line in read_metrics(run) if line["kind"] == "train"]


def _write_conll(path: Path, n: int) -> Path:
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        first, last, city = rng.choice(FIRST), rng.choice(LAST), rng.choice(CITIES)
        if rng.random() < 0.5:
            rows = [(first, "B-PER"), (last, "I-PER"), ("lives", "O"), ("in", "O"),
                    (city, "B-LOC"), (".", "O")]  # fmt: skip
        else:
            rows = [(city, "B-LOC"), ("welcomed", "O"), (first, "B-PER"), (".", "O")]
        lines += [f"{w} {t}" for w, t in rows] + [""]
    path.write_text("\n".join(lines))
    return path


def _write_squad(path: Path, n: int) -> Path:
    rng = random.Random(0)
    paragraphs = []
    for i in range(n):
        people = rng.sample(FIRST, 2)
        cities = rng.sample(CITIES, 2)
        context = f"{people[0]} lives in {cities[0]}. {people[1]} lives in {cities[1]}."
        asked = rng.randrange(2)
        start = context.index(f"{people[asked]} lives in ") + len(f"{people[asked]} lives in ")
        qa = {"id": f"q{i}", "question": f"Where does {people[asked]} live?",
              "answers": [{"text": cities[asked], "answer_start": start}]}  # fmt: skip
        paragraphs.append({"context": context, "qas": [qa]})
    path.write_text(json.dumps({"data": [{"paragraphs": paragraphs}]}))
    return path


NER_DATA = 'task = "ner"\npath = "{}"\nvocab_size = 150\n'
QA_DATA = 'task = "qa"\npath = "{}"\nvocab_size = 150\nmax_length = 16\ndoc_stride = 2\n'


@pytest.mark.parametrize(("task", "table"), [("ner", NER_DATA), ("qa", QA_DATA)])
def test_task_data_batches_give_the_model_a_loss(tmp_path: Path, task: str, table: str) -> None:
    """The recipe's model gets the task's head; a collated batch of its data has a loss."""
    write = _write_conll if task == "ner" else _write_squad
    data_file = write(tmp_path / ("train.conll" if task == "ner" else "train.json"), 10)
    recipe = load_recipe(_recipe(tmp_path, table.format(data_file)))
    data = load_data(recipe, tmp_path / "run", Distributed())
    model = build_recipe_model(recipe, data, seed=0)
    assert model.config.task_head == TASK_HEADS[task]
    batch = data.collate(data.train[:4], torch.Generator())
    if task == "ner":
        assert model.config.labels == ("O", "B-LOC", "B-PER", "I-PER")
        assert batch["labels"].shape == batch["input_ids"].shape
    else:
        assert len(data.train) > 8  # contexts longer than one window: several per question
        assert batch["labels"].shape == (4, 2)
    assert torch.isfinite(model(**batch).loss)


@pytest.mark.slow  # a run and an evaluation (seqeval imports scikit-learn)
def test_ner_run_learns_and_reports_entity_f1(tmp_path: Path) -> None:
    _write_conll(tmp_path / "train.conll", 80)
    run = tmp_path / "run"
    train_recipe(
        load_recipe(_recipe(tmp_path, NER_DATA.format(tmp_path / "train.conll")), RUN), run
    )
    losses = _losses(run)
    assert losses[-1] < 0.5 * losses[0]
    metrics = evaluate_run(run)
    assert set(metrics) >= {"precision", "recall", "f1", "loss", "accuracy"}
    assert 0.5 < metrics["f1"] <= 1.0  # a pattern this regular is learnt in 30 steps


@pytest.mark.slow  # a run and an evaluation
def test_qa_run_learns_and_reports_exact_match_and_f1(tmp_path: Path) -> None:
    _write_squad(tmp_path / "train.json", 60)
    run = tmp_path / "run"
    train_recipe(load_recipe(_recipe(tmp_path, QA_DATA.format(tmp_path / "train.json")), RUN), run)
    losses = _losses(run)
    assert losses[-1] < 0.7 * losses[0]
    metrics = evaluate_run(run)
    assert 0 <= metrics["exact_match"] <= metrics["f1"] <= 100
    assert metrics["accuracy"] > 0  # some start/end positions are right
