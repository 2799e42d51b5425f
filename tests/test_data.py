"""Data pipeline: token files, windows, collators (MLM statistics), batching, bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tformer.data import (
    BucketedBatches,
    DataError,
    MaskedLMCollator,
    Seq2SeqCollator,
    ShuffledBatches,
    TokenWindows,
    build_task_data,
    causal_lm_collate,
    open_token_file,
    prepare_corpus,
    read_records,
    read_text,
    write_token_file,
)

IGNORE = -100


# ---- token files and windows -------------------------------------------------------------
@pytest.mark.parametrize(("vocab_size", "dtype"), [(300, np.uint16), (70_000, np.uint32)])
def test_token_file_round_trips_through_a_memory_map(tmp_path, vocab_size, dtype):
    ids = np.random.default_rng(0).integers(0, vocab_size, 1000)
    write_token_file(tmp_path / "t.bin", ids, vocab_size)
    tokens = open_token_file(tmp_path / "t.bin")
    assert isinstance(tokens, np.memmap)
    assert tokens.dtype == dtype
    assert (tmp_path / "t.bin").stat().st_size == 1000 * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(tokens, ids)


def test_truncated_token_file_is_reported(tmp_path):
    write_token_file(tmp_path / "t.bin", range(10), 50)
    (tmp_path / "t.bin").write_bytes(b"\0" * 7)
    with pytest.raises(DataError, match="expected 20"):
        open_token_file(tmp_path / "t.bin")


def test_causal_windows_shift_labels_by_one():
    tokens = np.arange(100)
    windows = TokenWindows(tokens, window=9, stride=9)
    assert len(windows) == (100 - 9) // 9 + 1
    batch = causal_lm_collate([windows[0], windows[2]], torch.Generator())
    assert batch["input_ids"].tolist()[1] == list(range(18, 26))
    assert batch["labels"].tolist()[1] == list(range(19, 27))


def test_every_offset_window_covers_the_corpus():
    windows = TokenWindows(np.arange(20), window=5, stride=1)
    assert len(windows) == 16
    assert windows[15].tolist() == [15, 16, 17, 18, 19]


# ---- MLM masking ---------------------------------------------------------------------------
def test_mlm_masking_follows_bert_statistics():
    vocab, mask_id, specials = 100, 4, [0, 1, 2, 3, 4]
    collate = MaskedLMCollator(mask_id, vocab, specials, pad_id=0)
    rng = np.random.default_rng(0)
    rows = rng.integers(5, vocab, (64, 512))
    rows[:, 0] = 2  # a special token at the start of every row: never masked
    original = torch.as_tensor(rows)
    batch = collate(list(rows), torch.Generator().manual_seed(0))
    picked = batch["labels"] != IGNORE
    n = picked.sum().item()
    maskable = original.numel() - 64
    assert abs(n / maskable - 0.15) < 0.005
    assert not picked[:, 0].any()
    assert torch.equal(batch["labels"][picked], original[picked])
    inputs = batch["input_ids"][picked]
    masked = (inputs == mask_id).sum().item() / n
    unchanged = (inputs == original[picked]).sum().item() / n
    assert abs(masked - 0.8) < 0.01
    # "unchanged" also catches random replacements that drew the original token (1/95 of 10%)
    assert abs(unchanged - (0.1 + 0.1 / 95)) < 0.01
    assert abs(1 - masked - unchanged - 0.1 * 94 / 95) < 0.01
    assert not torch.isin(batch["input_ids"][~picked], torch.tensor([mask_id])).any()
    assert torch.equal(batch["input_ids"][~picked], original[~picked])


def test_mlm_masking_is_reproducible_from_the_generator_seed():
    collate = MaskedLMCollator(3, 50, [0, 1, 2, 3])
    rows = [np.arange(5, 45)] * 4
    a = collate(rows, torch.Generator().manual_seed(7))
    b = collate(rows, torch.Generator().manual_seed(7))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- seq2seq ---------------------------------------------------------------------------------
def test_pad_fills_the_chosen_side_and_the_mask_marks_real_tokens():
    from tformer.data.collate import pad, padding_mask

    rows = [[5, 6, 7], [8], []]
    assert pad(rows, 0).tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert pad(rows, -1, left=True).tolist() == [[5, 6, 7], [-1, -1, 8], [-1, -1, -1]]
    assert padding_mask(rows).tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert padding_mask(rows, left=True).tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert pad([], 0).shape == (0, 0) and pad(rows, 0).dtype == torch.long


def test_seq2seq_collator_shifts_targets_and_pads_labels_with_ignore():
    batch = Seq2SeqCollator(pad_id=0, start_id=1, eos_id=2)(
        [([5, 6, 7], [8, 9]), ([5], [8, 9, 10, 11])], torch.Generator()
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["decoder_input_ids"].tolist() == [[1, 8, 9, 0, 0], [1, 8, 9, 10, 11]]
    assert batch["labels"].tolist() == [[8, 9, 2, IGNORE, IGNORE], [8, 9, 10, 11, 2]]


# ---- batching --------------------------------------------------------------------------------
def test_shuffled_batches_are_a_permutation_per_epoch_and_deterministic():
    plan = ShuffledBatches(10, 3, seed=5)
    epoch0 = [i for k in range(3) for i in plan.batch(k)]
    assert len(set(epoch0)) == 9
    assert ShuffledBatches(10, 3, seed=5).batch(4) == plan.batch(4)
    assert plan.batch(3) != plan.batch(0) or plan.batch(4) != plan.batch(1)


def test_bucketing_covers_each_example_once_and_reduces_padding():
    lengths = np.random.default_rng(0).integers(1, 100, 1000)
    plan = BucketedBatches(lengths, batch_size=16, seed=0, max_tokens=800)
    batches = [plan.batch(k) for k in range(plan.batches_per_epoch)]
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert all(len(b) <= 16 and max(lengths[b]) * len(b) <= 800 for b in batches)
    padded = sum(max(lengths[b]) * len(b) for b in batches)
    random_batches = np.array_split(np.random.default_rng(1).permutation(1000), 1000 // 16)
    padded_random = sum(max(lengths[b]) * len(b) for b in random_batches)
    assert padded < 0.75 * padded_random


def test_bucketing_walks_through_epochs_of_different_lengths():
    """The cut into batches depends on each epoch's shuffle, so epochs differ in length; every
    position must still map to a batch, each epoch covering every example exactly once."""
    lengths = np.random.default_rng(0).integers(1, 100, 1000)
    plan = BucketedBatches(lengths, batch_size=16, seed=0, max_tokens=800)
    fresh = BucketedBatches(lengths, batch_size=16, seed=0, max_tokens=800)
    sizes = [len(plan._epoch(epoch)) for epoch in range(4)]
    assert len(set(sizes)) > 1  # the case that used to fail past the first epoch
    position = 0
    for size in sizes:
        epoch = [plan.batch(position + k) for k in range(size)]
        assert sorted(i for b in epoch for i in b) == list(range(1000))
        position += size
    assert fresh.batch(position - 1) == plan.batch(position - 1)  # resumed mid-run: the same


# ---- readers and bad input -----------------------------------------------------------------
def test_tables_in_three_formats_give_the_same_rows(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"hello, world",pos\nbye,neg\n')
    (tmp_path / "a.tsv").write_text("text\tlabel\nhello, world\tpos\nbye\tneg\n")
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"text": "hello, world", "label": "pos"})
        + "\n"
        + json.dumps({"text": "bye", "label": "neg"})
    )
    rows = [
        [r for _, r in read_records(tmp_path / f"a.{ext}", ["text", "label"])]
        for ext in ("csv", "tsv", "jsonl")
    ]
    assert (
        rows[0]
        == rows[1]
        == rows[2]
        == [
            {"text": "hello, world", "label": "pos"},
            {"text": "bye", "label": "neg"},
        ]
    )


def test_empty_file_is_reported(tmp_path):
    (tmp_path / "e.txt").write_text("  \n")
    with pytest.raises(DataError, match=r"e\.txt: file is empty"):
        read_text(tmp_path / "e.txt")


def test_non_utf8_is_reported_with_its_line(tmp_path):
    (tmp_path / "bad.tsv").write_bytes(b"text\tlabel\nok\ta\ncaf\xe9\tb\n")
    with pytest.raises(DataError, match=r"bad\.tsv:3: not valid UTF-8"):
        list(read_records(tmp_path / "bad.tsv", ["text"]))


def test_missing_column_is_reported(tmp_path):
    (tmp_path / "m.csv").write_text("body,label\nx,a\n")
    with pytest.raises(DataError, match=r"m\.csv:1: missing column\(s\) text"):
        list(read_records(tmp_path / "m.csv", ["text", "label"]))
    (tmp_path / "m.jsonl").write_text('{"text": "x", "label": "a"}\n{"text": "y"}\n')
    with pytest.raises(DataError, match=r"m\.jsonl:2: missing column\(s\) label"):
        list(read_records(tmp_path / "m.jsonl", ["text", "label"]))


def _classification(tmp_path, rows, **options):
    lines = "".join(f"{text}\t{label}\n" for text, label in rows)
    (tmp_path / "c.tsv").write_text("text\tlabel\n" + lines)
    table = {"task": "classification", "path": str(tmp_path / "c.tsv"), "tokenizer": "char"}
    return build_task_data({**table, **options}, tmp_path, [], 16)


def test_unknown_label_is_reported_with_its_line(tmp_path):
    rows = [("good", "pos"), ("bad", "neg"), ("meh", "neutral")]
    with pytest.raises(DataError, match=r"c\.tsv:4: label 'neutral' is not in the label set"):
        _classification(tmp_path, rows, labels=["neg", "pos"])


def test_too_long_sequence_is_reported_with_its_line(tmp_path):
    rows = [("short", "a"), ("short", "b")] * 3 + [("x" * 40, "a")]
    with pytest.raises(DataError, match=r"c\.tsv:8: sequence of 40 tokens is longer than"):
        _classification(tmp_path, rows)
    data = _classification(tmp_path, rows, truncate=True)
    assert max(len(ids) for ids, _ in [*data.train, *data.val]) == 16


def test_classification_split_is_stratified(tmp_path):
    rows = [(f"text {i}", "a") for i in range(50)] + [(f"text {i}", "b") for i in range(10)]
    data = _classification(tmp_path, rows, val_fraction=0.2)
    val_labels = sorted(label for _, label in data.val)
    assert val_labels == [0] * 10 + [1] * 2
    assert data.model_fields["n_labels"] == 2


def test_prepare_splits_text_at_the_last_tenth(tmp_path):
    text = "".join(chr(ord("a") + i % 26) + ("\n" if i % 7 == 0 else "") for i in range(875))
    assert len(text) == 1000
    (tmp_path / "t.txt").write_text(text)
    corpus = prepare_corpus(tmp_path / "t.txt", tmp_path / "out", tokenizer="char")
    tok = corpus.tokenizer
    train, val = corpus.tokens("train").tolist(), corpus.tokens("val").tolist()
    assert (len(train), len(val)) == (900, 100)  # one token per character, nothing added
    assert tok.decode(train) == text[:900]
    assert tok.decode(val) == text[900:]


def test_prepare_separates_table_rows_with_eos(tmp_path):
    rows = [json.dumps({"text": f"row {i}"}) for i in range(20)]
    (tmp_path / "t.jsonl").write_text("\n".join(rows))
    corpus = prepare_corpus(tmp_path / "t.jsonl", tmp_path / "out", tokenizer="char")
    eos = corpus.tokenizer.token_id("eos")
    assert corpus.tokens("train").tolist().count(eos) == 18
    assert corpus.tokens("val").tolist().count(eos) == 2
