"""`tformer evaluate`: metrics of a trained run on its validation or test split."""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> None:
    from tformer.training.evaluate_run import evaluate_run

    metrics = evaluate_run(
        args.run_dir,
        checkpoint=args.checkpoint,
        split=args.split,
        num_beams=args.beams,
        base=args.base,
        max_examples=args.max_examples,
    )
    print(json.dumps(metrics, indent=2))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="loss/perplexity/accuracy (and exact match, BLEU or ROUGE) of a trained run",
        description="Evaluate a run directory written by `tformer train`: loss, perplexity and "
        "accuracy on the validation split; exact match for the copy task; sacreBLEU (beam "
        "search) for translation; the [eval] table's metrics (BLEU, ROUGE of greedy answers) "
        "for supervised fine-tuning.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--checkpoint", help="checkpoint directory (default: RUN_DIR/best)")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--beams", type=int, default=4, help="beam size for BLEU (default 4)")
    p.add_argument(
        "--base",
        action="store_true",
        help="evaluate the model the run started from (init_from, before fine-tuning) instead",
    )
    p.add_argument(
        "--max-examples",
        type=int,
        metavar="N",
        help="generation metrics of fine-tuning runs on the split's first N examples only "
        "(default: the [eval] table's max_examples, else all)",
    )
    p.set_defaults(handler=run)
