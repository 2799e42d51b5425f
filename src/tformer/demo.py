"""The demo job behind `make demo`: the three families trained for real, in about 5 minutes.

1. A character-level GPT on Tiny Shakespeare for a fixed time budget; prints validation loss
   and a sampled continuation.
2. The 2017 encoder-decoder learning to reverse random sequences; prints exact match.
3. A small BERT pretrained with masked-LM on the same text; prints masked-token accuracy.

Each part is an ordinary recipe shipped inside the package (`tformer/recipes/demo/*.toml`, so
an installed tformer has them too) trained by `train_recipe`, the path `tformer train` takes;
the time budgets are the recipes' `[training] time_budget_s`. So every run directory under
runs/demo/ is a run like any other: `tformer evaluate runs/demo/gpt`, `tformer generate
runs/demo/gpt --prompt ...` and `tformer explain` work on it.
"""

from __future__ import annotations

import argparse
import os
import time
from importlib import resources
from pathlib import Path

import torch

from tformer.errors import MissingFileError
from tformer.generation import generate
from tformer.loading import load
from tformer.models import TformerModel
from tformer.tokenizer import Tokenizer
from tformer.training import TrainResult, load_recipe, train_recipe
from tformer.training.checkpointing import clear_run
from tformer.training.distributed import Distributed
from tformer.training.evaluate_run import evaluate_run
from tformer.training.recipe import RECIPE_FILE
from tformer.training.run import load_data

SHAKESPEARE = "tinyshakespeare.txt"
DATA_DIR_VARIABLE = "TFORMER_DATA_DIR"


def find_shared_data(name: str) -> Path:
    """`$TFORMER_DATA_DIR/<name>`, else `../shared/data/<name>` from the working directory
    (the project's checkout sits next to the shared datasets)."""
    candidates = [Path.cwd() / "../shared/data"]
    if os.environ.get(DATA_DIR_VARIABLE):
        candidates.insert(0, Path(os.environ[DATA_DIR_VARIABLE]))
    for directory in candidates:
        if (directory / name).is_file():
            return (directory / name).resolve()
    tried = ", ".join(str(d.resolve()) for d in candidates)
    raise MissingFileError(
        f"{name} not found (looked in {tried}); the demo reads the shared datasets from "
        f"../shared/data relative to the working directory, or from ${DATA_DIR_VARIABLE}"
    )


def train_part(name: str, out: Path, seconds: float | None, **data: str) -> TrainResult:
    """Train the demo recipe `name` into out/name, replacing that directory's last run (its
    prepared data is reused); `seconds` replaces the recipe's time budget, `data` its
    [data] values."""
    overrides = [f"--data.{key}={value}" for key, value in data.items()]
    if seconds is not None:
        overrides.append(f"--training.time_budget_s={seconds}")
    with resources.as_file(resources.files("tformer.recipes") / "demo" / f"{name}.toml") as path:
        recipe = load_recipe(path, overrides)
    clear_run(out / name)
    return train_recipe(recipe, out / name)


def sample_text(model: TformerModel, tokenizer: Tokenizer, prompt: str, n_tokens: int) -> str:
    """Sample `n_tokens` after `prompt`: more than the model's context holds, so the window
    slides (see `tformer.generation.DecodingState`)."""
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    new = generate(
        model, torch.tensor([ids]), max_new_tokens=n_tokens, temperature=0.8, top_k=40, seed=0
    )
    return tokenizer.decode(ids + [t for t in new[0].tolist() if t != model.config.pad_id])


def demo_gpt(out: Path, seconds: float | None, data_path: Path) -> None:
    print(f"\n== 1. decoder-only GPT, character level, on {data_path.name} ==")
    result = train_part("gpt", out, seconds, path=str(data_path))
    print(f"trained {result.step} steps in {result.elapsed_s:.0f} s; validation loss ", end="")
    print(f"{result.val_loss:.3f} (nanoGPT's CPU baby-GPT: 1.89 after 2000 steps)")
    model, tokenizer = load(out / "gpt", require_tokenizer=True)
    sample = sample_text(model, tokenizer, "ROMEO:\n", 300)
    print(f"sample:\n{sample}")


def demo_reverse(out: Path, seconds: float | None) -> None:
    print("\n== 2. encoder-decoder (2017 Transformer) learns to reverse sequences ==")
    run_dir = out / "reverse"
    result = train_part("reverse", out, seconds)
    metrics = evaluate_run(run_dir)
    pairs = load_data(load_recipe(run_dir / RECIPE_FILE), run_dir, Distributed()).val
    model, _ = load(run_dir)
    source, target = pairs[0]
    new = generate(model, torch.tensor([source]), max_new_tokens=len(target) + 1)
    print(f"trained {result.step} steps in {result.elapsed_s:.0f} s")
    print(f"example: {list(source)} -> {new[0, : len(target)].tolist()}")
    print(f"exact match, greedy, {len(pairs)} held-out sequences: {metrics['exact_match']:.1%}")


def demo_bert(out: Path, seconds: float | None, data_path: Path) -> None:
    print(f"\n== 3. encoder-only BERT, masked-LM pretraining on {data_path.name} ==")
    result = train_part("bert", out, seconds, path=str(data_path))
    metrics = evaluate_run(out / "bert")
    print(f"trained {result.step} steps in {result.elapsed_s:.0f} s")
    print(
        f"masked-token accuracy on the validation split: {metrics['accuracy']:.1%} "
        f"(loss {metrics['loss']:.3f})"
    )
    model, tokenizer = load(out / "bert", require_tokenizer=True)
    text = "To be, or not to be, that is the question"
    ids = tokenizer.encode(text, add_special_tokens=False)
    hidden = [i for i, ch in enumerate(text) if ch.isalpha() and i % 6 == 3]  # ~15%, as trained
    masked = [tokenizer.token_id("mask") if i in hidden else t for i, t in enumerate(ids)]
    with torch.no_grad():
        guess = model(torch.tensor([masked])).logits[0].argmax(-1).tolist()  # (T,)
    shown = "".join("_" if i in hidden else ch for i, ch in enumerate(text))
    filled = tokenizer.decode([guess[i] if i in hidden else t for i, t in enumerate(ids)])
    print(f"fill-mask: {shown!r}\n       ->  {filled!r}")


def run_demo(args: argparse.Namespace) -> None:
    data_path = find_shared_data(SHAKESPEARE)
    out = Path(args.out)
    started = time.perf_counter()
    demo_gpt(out, args.gpt_seconds, data_path)
    demo_reverse(out, args.seq2seq_seconds)
    demo_bert(out, args.bert_seconds, data_path)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; runs are in {out}/")
