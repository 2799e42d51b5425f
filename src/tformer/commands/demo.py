"""`tformer demo`: the job behind `make demo` (see tformer.demo)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> None:
    from tformer.demo import run_demo

    run_demo(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train one model of each family on real tasks (what `make demo` runs)",
        description="Train a character-level GPT on Tiny Shakespeare, an encoder-decoder on "
        "sequence reversal and a BERT with masked-LM, each within a time budget, and print "
        "their metrics and samples. Needs ../shared/data/tinyshakespeare.txt.",
    )
    p.add_argument("--out", default="runs/demo", help="where the runs go (default runs/demo)")
    p.add_argument("--gpt-seconds", type=float, default=170.0)
    p.add_argument("--seq2seq-seconds", type=float, default=45.0)
    p.add_argument("--bert-seconds", type=float, default=60.0)
    p.set_defaults(handler=run)
