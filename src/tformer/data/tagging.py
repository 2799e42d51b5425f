"""Token-classification (NER) data: CoNLL-style files of one word and its IOB tag per line.

A sentence is a run of lines "word ... tag" (the first column the word, the last its tag:
CoNLL-2003's four columns and plain two-column files alike), sentences are separated by
blank lines, "-DOCSTART-" lines are skipped. Tags are IOB1 or IOB2: "O", "B-TYPE", "I-TYPE".
The tokenizer splits words into sub-word pieces; the first piece of each word carries the
word's tag and the others IGNORE_INDEX (Devlin et al. 2019, 5.3), so the loss and the
predictions are per word, as the NER pipeline reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tformer.data.classification import LabelledTextOptions
from tformer.data.collate import TaggingCollator
from tformer.data.errors import DataError
from tformer.data.records import read_text
from tformer.data.task import (
    TaskData,
    check_length,
    obtain_tokenizer,
    parse_options,
    read_splits,
    resolve_path,
)
from tformer.models.heads import IGNORE_INDEX

DOCUMENT_START = "-DOCSTART-"


@dataclass(frozen=True)
class TaggedSentence:
    """Words and their tags; `line` is the file line of the first word (for errors)."""

    words: list[str]
    tags: list[str]
    line: int


@dataclass
class TaggingOptions(LabelledTextOptions):
    """`[data]` of task = "ner".

    path: the training file; val_path: the validation file, else a seeded `val_fraction` of
    the training sentences. labels: the tag set in class-id order (default: "O", then the
    other tags of the data, sorted); a tag outside an explicit set is an error.
    tokenizer: "wordpiece"/"bpe"/"char" trained on the training words, or a path to a
    tokenizer.json / checkpoint directory (a pretrained encoder's).
    """

    val_path: str | None = None


def read_conll(path: Path) -> list[TaggedSentence]:
    """The sentences of a CoNLL-style file; a line without a tag, or with a tag that is not
    IOB, is a DataError naming its line."""
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    first = 0
    for number, line in enumerate([*read_text(path).splitlines(), ""], start=1):
        columns = line.split()
        if not columns or columns[0] == DOCUMENT_START:
            if words:
                sentences.append(TaggedSentence(words, tags, first))
            words, tags = [], []
            continue
        if len(columns) < 2:
            raise DataError(path, f"expected a word and its tag, got {line.strip()!r}", number)
        tag = columns[-1]
        if (tag != "O" and not tag.startswith(("B-", "I-"))) or tag in ("B-", "I-"):
            raise DataError(path, f"tag {tag!r} is not IOB: use O, B-<type> or I-<type>", number)
        first = first if words else number
        words.append(columns[0])
        tags.append(tag)
    return sentences


def align_tags(word_ids: Sequence[int | None], tag_ids: Sequence[int]) -> list[int]:
    """Per token, the tag of its word if it is the word's first piece, else IGNORE_INDEX
    (special tokens, later pieces). word_ids: each token's word index, None for specials."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE_INDEX if word is None or word == previous else tag_ids[word])
        previous = word
    return labels


def build_tagging(table: dict, work_dir: Path, base_dirs: list[Path], max_seq_len: int) -> TaskData:
    options = parse_options(TaggingOptions, table, "[data]")
    path = resolve_path(options.path, base_dirs)
    train, val, val_path = read_splits(
        read_conll, path, options.val_path, options.val_fraction, options.seed, base_dirs
    )
    seen = {t for s in (*train, *val) for t in s.tags} - {"O"}
    labels = options.labels or ["O", *sorted(seen)]
    tag_ids = {tag: i for i, tag in enumerate(labels)}
    texts = [" ".join(s.words) for s in train]
    tokenizer = obtain_tokenizer(options.tokenizer, texts, options.vocab_size, base_dirs)
    limit = min(max_seq_len, options.max_length or max_seq_len)

    def encode(sentences: list[TaggedSentence], source: Path) -> list[tuple[list, list]]:
        encodings = tokenizer.encodings([s.words for s in sentences], is_pretokenized=True)
        examples = []
        for sentence, encoding in zip(sentences, encodings, strict=True):
            unknown = [t for t in sentence.tags if t not in tag_ids]
            if unknown:
                raise DataError(
                    source, f"tag {unknown[0]!r} is not in the label set {labels}", sentence.line
                )
            ids = check_length(encoding.ids, limit, source, sentence.line, options.truncate)
            tags = align_tags(encoding.word_ids, [tag_ids[t] for t in sentence.tags])
            examples.append((ids, tags[: len(ids)]))
        return examples

    fields = {"vocab_size": tokenizer.vocab_size, "n_labels": len(labels)}
    fields["pad_id"] = tokenizer.token_id("pad")
    examples = encode(train, path)
    return TaskData(
        "ner",
        examples,
        encode(val, val_path),
        TaggingCollator(fields["pad_id"] or 0),
        fields,
        tokenizer,
        train_lengths=[len(ids) for ids, _ in examples],
        extras={"labels": labels},
    )
