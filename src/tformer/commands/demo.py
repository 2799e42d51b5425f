"""`tformer demo`: the job behind `make demo`."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> None:
    from tformer.demo import run_demo

    run_demo(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the demo job (what `make demo` runs)",
        description="Build one model of each family and run it; see README.md.",
    )
    p.set_defaults(handler=run)
