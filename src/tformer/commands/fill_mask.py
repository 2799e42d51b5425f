"""`tformer fill-mask MODEL TEXT`: the likeliest tokens for each [MASK] in TEXT."""

from __future__ import annotations

import argparse

from tformer.commands import MODEL_HELP


def run(args: argparse.Namespace) -> None:
    from tformer.loading import load
    from tformer.pipelines import fill_mask

    model, tokenizer = load(args.model, require_tokenizer=True)
    for i, candidates in enumerate(fill_mask(model, tokenizer, args.text, top_k=args.top_k)):
        print(f"mask {i}: " + ", ".join(f"{token!r} {p:.3f}" for token, p in candidates))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fill-mask",
        help="predict the masked tokens of a text with a masked-LM encoder",
        description="Print the --top-k likeliest tokens for each mask token (e.g. [MASK]) in "
        "TEXT, with their probabilities. Needs a model with a masked-LM head.",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("text", metavar="TEXT", help="text containing the mask token")
    p.add_argument("--top-k", type=int, default=5, help="candidates per mask (default 5)")
    p.set_defaults(handler=run)
