"""`tformer classify MODEL TEXT...`: the label of each text with its probability."""

from __future__ import annotations

import argparse

from tformer.commands import MODEL_HELP, read_texts


def run(args: argparse.Namespace) -> None:
    from tformer.loading import load
    from tformer.pipelines import classify

    model, tokenizer = load(args.model, require_tokenizer=True)
    texts = read_texts(args.texts, args.file)
    for text, ranking in zip(texts, classify(model, tokenizer, texts), strict=True):
        best = ", ".join(f"{label} {p:.3f}" for label, p in ranking[: args.top_k])
        print(f"{best}\t{text[:60]!r}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="classify texts with a sequence-classification encoder",
        description="Print the --top-k likeliest labels (with probabilities) for each text.",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--file", help="also read texts from this file, one per line")
    p.add_argument("--top-k", type=int, default=1, help="labels shown per text (default 1)")
    p.set_defaults(handler=run)
