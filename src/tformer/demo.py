"""The demo job behind `make demo`: the three families trained for real, in about 5 minutes.

1. A character-level GPT on Tiny Shakespeare (first 90% train, last 10% validation) for a
   fixed time budget; prints validation loss and a sampled continuation.
2. The 2017 encoder-decoder learning to reverse random sequences; prints exact match.
3. A small BERT pretrained with masked-LM on the same text; prints masked-token accuracy.

Each part is an ordinary recipe trained by the library's Trainer; outputs go to runs/demo/.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import torch

from tformer.data.collate import pad
from tformer.generation import generate
from tformer.models import TformerModel
from tformer.tokenizer import Tokenizer
from tformer.training import Recipe, TrainResult
from tformer.training.checkpointing import clear_run
from tformer.training.distributed import Distributed
from tformer.training.evaluation import evaluate_batches
from tformer.training.generation_metrics import exact_match
from tformer.training.run import build_recipe_model, build_streams, load_data
from tformer.training.trainer import Trainer

SHAKESPEARE = "tinyshakespeare.txt"
PROBE_STEPS = 4

GPT = {
    "model": {
        "arch": "decoder",
        "d_model": 128,
        "n_heads": 4,
        "n_layers": 4,
        "d_ff": 512,
        "max_seq_len": 64,
        "positional": "learned",
        "norm_position": "pre",
        "activation": "gelu",
        "dropout": 0.0,
        "bias": False,
    },
    "data": {"task": "causal-lm", "tokenizer": "char", "block_size": 64, "train_stride": 1},
    "training": {
        "batch_size": 12,
        "lr": 2e-3,
        "min_lr": 1e-4,
        "warmup_steps": 50,
        "eval_every": 10**9,
        "eval_batches": None,
        "log_every": 25,
        "seed": 1337,
    },
}
REVERSE = {
    "model": {
        "arch": "encoder-decoder",
        "d_model": 64,
        "n_heads": 4,
        "n_layers": 2,
        "d_ff": 256,
        "max_seq_len": 16,
        "dropout": 0.0,
        "scale_embeddings": True,
    },
    "data": {"task": "copy", "seq_len": 10, "n_symbols": 8, "reverse": True, "n_val": 1000},
    "training": {
        "batch_size": 64,
        "lr": 0.5,
        "schedule": "noam",
        "warmup_steps": 200,
        "weight_decay": 0.0,
        "beta2": 0.98,
        "grad_clip": 0.0,
        "label_smoothing": 0.0,
        "eval_every": 10**9,
        "eval_batches": 4,
        "log_every": 25,
        "seed": 0,
    },
}
BERT = {  # the GPT's sizes, bidirectional, with BERT's masked-LM objective
    # Rotary positions: with learned ones, MLM sat on its unigram plateau for the whole minute
    "model": {**GPT["model"], "arch": "encoder", "positional": "rotary"},
    "data": {**GPT["data"], "task": "mlm"},
    "training": {**GPT["training"], "batch_size": 16, "seed": 0},
}


def find_shared_data(name: str) -> Path:
    """`../shared/data/<name>` next to the project (or under $TFORMER_DATA_DIR)."""
    project = Path(__file__).resolve().parents[2]  # src/tformer/demo.py -> project root
    candidates = [Path.cwd() / "../shared/data", project / "../shared/data"]
    if os.environ.get("TFORMER_DATA_DIR"):
        candidates.insert(0, Path(os.environ["TFORMER_DATA_DIR"]))
    for directory in candidates:
        if (directory / name).is_file():
            return (directory / name).resolve()
    tried = ", ".join(str(d.resolve()) for d in candidates)
    raise FileNotFoundError(
        f"{name} not found (looked in {tried}); the demo reads the shared datasets from "
        "../shared/data relative to the project root, or from $TFORMER_DATA_DIR"
    )


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _recipe(template: dict, **data: object) -> Recipe:
    tables = copy.deepcopy(template)
    tables["data"].update(data)
    return Recipe(**tables)


def _time_steps(trainer: Trainer, threads: int) -> float:
    """Seconds per training step with `threads` intra-op threads (after one warm-up step)."""
    torch.set_num_threads(threads)
    trainer.train_step()
    started = time.perf_counter()
    for _ in range(PROBE_STEPS):
        trainer.train_step()
    return (time.perf_counter() - started) / PROBE_STEPS


def train_for(recipe: Recipe, run_dir: Path, seconds: float) -> tuple[Trainer, TrainResult]:
    """Train within about `seconds`: time a few steps, size the cosine/Noam schedule to fit
    the budget, then train a fresh model (the probe's weights are thrown away).

    The probe also picks 1 or 2 threads, whichever is faster here: on shared cores a second
    thread that keeps being descheduled can make every step several times slower.
    """
    dist = Distributed()
    clear_run(run_dir)  # the demo's own folder: a new demo replaces the last one's runs
    data = load_data(recipe, run_dir, dist)
    config = recipe.train_config()

    def trainer(config, directory: Path) -> Trainer:
        model = build_recipe_model(recipe, data, config.seed)
        train, val = build_streams(data, config, dist)
        return Trainer(model, config, train, val, directory, tokenizer=data.tokenizer)

    with tempfile.TemporaryDirectory() as tmp:
        probe = trainer(config.replace(progress=False), Path(tmp))
        timings = {n: _time_steps(probe, n) for n in range(1, min(2, os.cpu_count() or 1) + 1)}
    threads = min(timings, key=timings.__getitem__)
    torch.set_num_threads(threads)
    steps = max(config.warmup_steps + 1, int(seconds / timings[threads]))
    print(f"{threads} thread(s), {timings[threads] * 1000:.0f} ms/step -> {steps} steps")
    final = trainer(config.replace(max_steps=steps, max_time_s=seconds * 1.15), run_dir)
    return final, final.fit()


def sample_text(model: TformerModel, tokenizer: Tokenizer, prompt: str, n_tokens: int) -> str:
    """Sample `n_tokens` after `prompt`, longer than the model's context: each `generate`
    call continues from the last half-context of what has been written so far."""
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    target = len(ids) + n_tokens
    window = model.config.max_seq_len
    while len(ids) < target:
        context = ids[-(window // 2) :]
        new = generate(
            model,
            torch.tensor([context], device=_device(model)),
            max_new_tokens=min(window - len(context), target - len(ids)),
            do_sample=True,
            temperature=0.8,
            top_k=40,
            seed=len(ids),
        )
        ids += [t for t in new[0].tolist() if t != model.config.pad_id]
    return tokenizer.decode(ids)


def demo_gpt(out: Path, seconds: float, data_path: Path) -> None:
    print(f"\n== 1. decoder-only GPT, character level, on {data_path.name} ({seconds:.0f} s) ==")
    trainer, result = train_for(_recipe(GPT, path=str(data_path)), out / "gpt", seconds)
    print(f"trained {result.step} steps in {result.elapsed_s:.0f} s; validation loss ", end="")
    print(f"{result.val_loss:.3f} (nanoGPT's CPU baby-GPT: 1.89 after 2000 steps)")
    sample = sample_text(trainer.model.eval(), trainer.tokenizer, "ROMEO:\n", 300)  # type: ignore[arg-type]
    print(f"sample:\n{sample}")


def demo_reverse(out: Path, seconds: float) -> None:
    print(
        f"\n== 2. encoder-decoder (2017 Transformer) learns to reverse sequences ({seconds:.0f} s) =="
    )
    trainer, result = train_for(_recipe(REVERSE), out / "reverse", seconds)
    model = trainer.model.eval()
    pairs = trainer.val_data.dataset  # type: ignore[union-attr]
    accuracy = exact_match(model, [pairs[i] for i in range(len(pairs))])  # type: ignore[arg-type]
    source, target = pairs[0]
    new = generate(
        model, torch.tensor([source], device=_device(model)), max_new_tokens=len(target) + 1
    )
    print(f"trained {result.step} steps in {result.elapsed_s:.0f} s")
    print(f"example: {source} -> {new[0, : len(target)].tolist()}")
    print(f"exact match, greedy, {len(pairs)} held-out sequences: {accuracy:.1%}")


def demo_bert(out: Path, seconds: float) -> None:
    print(f"\n== 3. encoder-only BERT, masked-LM pretraining on {SHAKESPEARE} ({seconds:.0f} s) ==")
    # Same characters, same split: reuse the token files the GPT part prepared.
    recipe = _recipe(BERT, prepared=str((out / "gpt" / "data").resolve()))
    trainer, result = train_for(recipe, out / "bert", seconds)
    val = trainer.val_data
    metrics = evaluate_batches(trainer.model, val.epoch(), _device(trainer.model))  # type: ignore[union-attr]
    print(f"trained {result.step} steps in {result.elapsed_s:.0f} s")
    print(
        f"masked-token accuracy on the validation split: {metrics['accuracy']:.1%} "
        f"(loss {metrics['loss']:.3f}, {metrics['targets']:,} masked characters)"
    )
    tokenizer, model = trainer.tokenizer, trainer.model.eval()
    text = "To be, or not to be, that is the question"
    ids = tokenizer.encode(text, add_special_tokens=False)  # type: ignore[union-attr]
    hidden = [i for i, ch in enumerate(text) if ch.isalpha() and i % 6 == 3]  # ~15%, as trained
    masked = [tokenizer.token_id("mask") if i in hidden else t for i, t in enumerate(ids)]  # type: ignore[union-attr]
    with torch.no_grad():
        guess = model(pad([masked], 0).to(_device(model))).logits[0].argmax(-1).tolist()
    shown = "".join("_" if i in hidden else ch for i, ch in enumerate(text))
    filled = tokenizer.decode([guess[i] if i in hidden else t for i, t in enumerate(ids)])  # type: ignore[union-attr]
    print(f"fill-mask: {shown!r}\n       ->  {filled!r}")


def run_demo(args: argparse.Namespace) -> None:
    data_path = find_shared_data(SHAKESPEARE)
    out = Path(args.out)
    started = time.perf_counter()
    demo_gpt(out, args.gpt_seconds, data_path)
    demo_reverse(out, args.seq2seq_seconds)
    demo_bert(out, args.bert_seconds)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; runs are in {out}/")
