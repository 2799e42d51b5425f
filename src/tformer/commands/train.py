"""`tformer train`: train a recipe (configs/*.toml), or resume an interrupted run."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def run(args: argparse.Namespace) -> None:
    from tformer.errors import InputError
    from tformer.training import load_recipe, train_recipe
    from tformer.training.recipe import RECIPE_FILE

    if args.recipe is None and args.resume is None:
        raise InputError("give a recipe (CONFIG.toml) or --resume RUN_DIR")
    if args.resume is not None:
        run_dir = Path(args.resume)
        recipe_path = Path(args.recipe) if args.recipe else run_dir / RECIPE_FILE
    else:
        recipe_path = Path(args.recipe)
        run_dir = Path(args.out) if args.out else Path("runs") / recipe_path.stem
    recipe = load_recipe(recipe_path, args.overrides)
    result = train_recipe(recipe, run_dir, resume=args.resume is not None)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, one summary line (from process 0) is enough
    val = f"val_loss {result.val_loss:.4f}  " if result.val_loss is not None else ""
    print(
        f"step {result.step}  {val}train time {result.elapsed_s:.1f}s  "
        f"checkpoint {result.checkpoint}"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a recipe (CONFIG.toml) or resume a run",
        description="Train the model, data and schedule a recipe describes. Options come "
        "before CONFIG; `--table.key value` overrides after it (e.g. --training.max_steps 100). "
        "Under `torchrun --nproc_per_node=N` the same command trains with DDP.",
    )
    p.add_argument("--out", help="run directory (default: runs/<recipe name>)")
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint"
    )
    p.add_argument("recipe", nargs="?", metavar="CONFIG.toml", help="the recipe to train")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="--table.key value pairs")
    p.set_defaults(handler=run)
