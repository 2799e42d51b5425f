"""Evaluate a trained run: loss / perplexity / accuracy, plus the task's own scores: exact
match (copy), BLEU (seq2seq), entity F1 (ner), SQuAD exact match and F1 (qa), BLEU or ROUGE
of the greedy answers (sft; for a fine-tuning run, also of the model it started from)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tformer.adapters import add_lora, merge_and_unload_lora
from tformer.checkpoint import (
    CheckpointError,
    load_weights,
    read_config,
    read_weights,
    run_checkpoint,
)
from tformer.data import TaskData
from tformer.errors import InputError
from tformer.models import TformerModel, build_model
from tformer.training.distributed import Distributed
from tformer.training.evaluation import evaluate_batches
from tformer.training.generation_metrics import (
    EvalConfig,
    corpus_bleu,
    decoded_texts,
    exact_match,
    generation_scores,
)
from tformer.training.recipe import RECIPE_FILE, Recipe, load_recipe
from tformer.training.run import build_recipe_model, build_streams, load_data
from tformer.training.squad_metrics import answer_scores
from tformer.training.tagging_metrics import entity_scores

TOKENIZER_FROM_CHECKPOINT = ("seq2seq", "classification", "ner", "qa")
EVAL_BATCH = 32  # examples per forward pass of the entity scores


SAMPLES = 3  # answers shown next to the generation metrics


def task_metrics(
    model: TformerModel, data: TaskData, split: str, num_beams: int, eval_config: EvalConfig
) -> dict[str, Any]:
    """Metrics of the task's outputs: copy -> exact match; seq2seq -> sacreBLEU (with beam
    search); ner -> seqeval's entity precision / recall / F1; qa -> SQuAD exact match / F1
    of the answers the qa pipeline gives; sft -> the `[eval]` table's metrics of the greedy
    answers."""
    if data.task == "sft":
        return answer_metrics(model, data, split, eval_config)
    if data.task == "ner":
        batches = (
            data.collate(data.val[i : i + EVAL_BATCH], torch.Generator())
            for i in range(0, len(data.val), EVAL_BATCH)
        )
        return entity_scores(model, batches, data.extras["labels"])
    if data.task == "qa":
        return answer_scores(
            model,
            data.tokenizer,  # type: ignore[arg-type]
            data.extras["val_questions"],
            max_seq_len=data.extras["max_seq_len"],
            doc_stride=data.extras["doc_stride"],
        )
    pairs = data.extras["test"] if split == "test" else data.val
    if data.task == "copy":
        return {"exact_match": exact_match(model, pairs, progress=True)}  # type: ignore[arg-type]
    if data.task == "seq2seq":
        references = data.extras["test_references"] if split == "test" else None
        if references is None:
            references = [data.tokenizer.decode(t) for _, t in pairs]  # type: ignore[union-attr]
        longest = max(len(s) for s, _ in pairs)
        score, _ = corpus_bleu(
            model,  # type: ignore[arg-type]
            data.tokenizer,  # type: ignore[arg-type]
            [s for s, _ in pairs],
            references,
            num_beams=num_beams,
            max_new_tokens=min(model.config.max_seq_len - 1, int(longest * 1.5) + 10),
            progress=True,
        )
        return {"bleu": score}
    return {}


def answer_metrics(
    model: TformerModel, data: TaskData, split: str, config: EvalConfig
) -> dict[str, Any]:
    """BLEU / ROUGE of the model's greedy answers to the split's prompts, and the first few
    answers next to their references."""
    if not config.metrics:
        return {}
    prompts, references = data.extras["prompts"][split]
    count = min(len(prompts), config.max_examples or len(prompts))
    answers = decoded_texts(
        model,
        data.tokenizer,  # type: ignore[arg-type]
        prompts[:count],
        batch_size=config.batch_size,
        max_new_tokens=config.max_new_tokens,
        progress=True,
    )
    samples = [
        {"reference": r, "answer": a} for r, a in zip(references[:SAMPLES], answers, strict=False)
    ]
    scores = generation_scores(config.metrics, answers, references[:count])
    return scores | {"examples": count, "samples": samples}


def load_run_model(checkpoint: Path, recipe: Recipe) -> TformerModel:
    """The model a checkpoint of the run holds; a `[lora]` run's checkpoints hold adapter
    tensors next to the base, so the model is given the same adapters before loading."""
    lora = recipe.lora_config()
    if lora is None:
        return TformerModel.from_pretrained(checkpoint)
    model = build_model(read_config(checkpoint))
    add_lora(model, lora)
    load_weights(model, read_weights(checkpoint), str(checkpoint))
    return model.eval()


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    split: str = "val",
    num_beams: int = 4,
    base: bool = False,
    max_examples: int | None = None,
) -> dict[str, Any]:
    """Metrics of a run's checkpoint (default: best) on its validation (or test) split; with
    `base`, of the model the run started from instead (`init_from`, adapters not yet
    trained): the "before" of a fine-tuning run. `max_examples` replaces the `[eval]`
    table's (generation metrics on the split's first N examples)."""
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE_FILE).is_file():
        raise CheckpointError(f"{run_dir} is not a training run: no {RECIPE_FILE} in it")
    ckpt = None if base else Path(checkpoint) if checkpoint else run_checkpoint(run_dir)
    recipe = load_recipe(run_dir / RECIPE_FILE)
    if max_examples is not None:
        recipe.table("eval")["max_examples"] = max_examples
    if ckpt is not None and recipe.data.get("task") in TOKENIZER_FROM_CHECKPOINT:
        recipe.data["tokenizer"] = str(ckpt.resolve())  # the vocabulary the model was trained with
    data = load_data(recipe, run_dir, Distributed())
    if split == "test" and not data.extras.get("test"):
        raise InputError(f"task={data.task!r} of {run_dir} has no test split; use --split val")
    if ckpt is None:  # built as the run's first step saw it: the same seed
        model = build_recipe_model(recipe, data, recipe.train_config().seed).eval()
    else:
        model = load_run_model(ckpt, recipe)
    if recipe.lora_config() is not None:  # the same outputs; decoding then runs at the base's
        model = merge_and_unload_lora(model)  # speed, without two adapter products per layer
    _, val = build_streams(data, recipe.train_config(), Distributed())
    metrics: dict[str, Any] = {"checkpoint": str(ckpt or "base"), "split": split}
    if split == "val":
        scores = evaluate_batches(model, val.epoch(), next(model.parameters()).device)
        metrics |= {k: scores[k] for k in ("loss", "perplexity", "accuracy")}
    return metrics | task_metrics(model, data, split, num_beams, recipe.eval_config())
