"""`tformer plot`: a PNG of a run's training and validation loss curves."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> None:
    from tformer.training.plot import plot_run

    print(plot_run(args.run_dir, args.out))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="plot a run's loss curves to a PNG",
        description="Read RUN_DIR/metrics.jsonl and write the loss curves (needs matplotlib).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="PNG path (default: RUN_DIR/loss.png)")
    p.set_defaults(handler=run)
