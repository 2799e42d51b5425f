"""A LoRA run as a plain model: its adapters merged into the base weights, for export."""

from __future__ import annotations

from pathlib import Path

from tformer.adapters import merge_and_unload_lora
from tformer.checkpoint import holds_run, run_checkpoint
from tformer.errors import InputError
from tformer.models import TformerModel
from tformer.tokenizer import TOKENIZER_FILE, Tokenizer
from tformer.training.evaluate_run import load_run_model
from tformer.training.recipe import RECIPE_FILE, load_recipe


def load_merged_run(run_dir: str | Path) -> tuple[TformerModel, Tokenizer | None]:
    """The best (else latest) checkpoint of a `[lora]` run, adapters merged and taken away
    (`merge_and_unload_lora`), and its tokenizer: a model that saves, converts and loads
    like any other, with the fine-tuned weights under the base's tensor names."""
    run_dir = Path(run_dir)
    if not holds_run(run_dir) or not (run_dir / RECIPE_FILE).is_file():
        raise InputError(
            f"--merge-lora takes a `tformer train` run directory; {run_dir} is not one"
        )
    recipe = load_recipe(run_dir / RECIPE_FILE)
    if recipe.lora_config() is None:
        raise InputError(
            f"{run_dir} was trained without a [lora] table, so there is nothing to merge; "
            "convert it without --merge-lora"
        )
    checkpoint = run_checkpoint(run_dir)
    model = merge_and_unload_lora(load_run_model(checkpoint, recipe))
    has_tokenizer = (checkpoint / TOKENIZER_FILE).is_file()
    return model.eval(), Tokenizer.load(checkpoint) if has_tokenizer else None
