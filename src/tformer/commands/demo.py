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
        "their metrics and samples. Each part is a recipe shipped with tformer "
        "(tformer/recipes/demo/), trained as `tformer train` would. Needs "
        "tinyshakespeare.txt in ../shared/data or $TFORMER_DATA_DIR.",
    )
    p.add_argument("--out", default="runs/demo", help="where the runs go (default runs/demo)")
    for part in ("gpt", "seq2seq", "bert"):
        p.add_argument(
            f"--{part}-seconds",
            type=float,
            metavar="S",
            help=f"training time of the {part} part (default: its recipe's time_budget_s)",
        )
    p.set_defaults(handler=run)
