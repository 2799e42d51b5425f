"""`tformer prepare`: text / TSV / CSV / JSONL -> tokenizer + train/validation token files."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> None:
    from tformer.data import prepare_corpus

    corpus = prepare_corpus(
        args.input,
        args.out,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        val_fraction=args.val_fraction,
        text_column=args.text_column,
        seed=args.seed,
        # the trainer's bars also print blank lines to stdout: only for a person watching
        progress=sys.stderr.isatty(),
    )
    sizes = {split: len(corpus.tokens(split)) for split in ("train", "val")}
    print(
        f"{corpus.directory}: vocabulary {corpus.tokenizer.vocab_size}, "
        f"train {sizes['train']:,} tokens, val {sizes['val']:,} tokens"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="tokenize a corpus into train/val token files",
        description="Train a tokenizer on the training part of INPUT and write tokenizer.json, "
        "train.bin and val.bin (memory-mappable) into OUT. A .txt file is split at a character "
        "offset (last --val-fraction is validation); a table by a seeded row permutation.",
    )
    p.add_argument("input", metavar="INPUT", help=".txt, .tsv, .csv or .jsonl file")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tokenizer", choices=("char", "bpe", "wordpiece"), default="char")
    p.add_argument("--vocab-size", type=int, help="vocabulary size (bpe, wordpiece)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--text-column", default="text", help="column of a table holding the text")
    p.add_argument("--seed", type=int, default=0, help="seed of a table's row split")
    p.set_defaults(handler=run)
