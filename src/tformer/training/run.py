"""`train_recipe`: recipe -> data, model, Trainer; what `tformer train` and the demo call."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from tformer.adapters import add_lora, peft_target_names, save_peft_adapters
from tformer.checkpoint import ADAPTERS, holds_run, latest_checkpoint
from tformer.data import TASK_ARCH, BatchStream, TaskData, build_task_data
from tformer.data.batching import BucketedBatches, SequentialBatches, ShuffledBatches
from tformer.errors import ConfigError, InputError, TformerError
from tformer.models import TformerModel, build_model
from tformer.training.budget import fit_to_budget
from tformer.training.config import TrainConfig
from tformer.training.distributed import Distributed, barrier, init_distributed
from tformer.training.recipe import RECIPE_FILE, Recipe
from tformer.training.trainer import Trainer, TrainResult

TASK_HEADS = {
    "mlm": "masked-lm",
    "classification": "sequence-classification",
    "ner": "token-classification",
    "qa": "question-answering",
}


def load_data(recipe: Recipe, run_dir: Path, dist: Distributed) -> TaskData:
    """Build the task data; the main process prepares token files first, others reuse them."""
    max_seq_len = recipe.base_model_config().max_seq_len
    base_dirs = [recipe.source.parent.parent] if recipe.source else []  # configs/.. = project
    if not dist.is_main:
        barrier(dist)
    data = build_task_data(dict(recipe.data), run_dir, base_dirs, max_seq_len)
    if dist.is_main:
        barrier(dist)
    return data


def build_streams(
    data: TaskData, config: TrainConfig, dist: Distributed
) -> tuple[BatchStream, BatchStream]:
    if data.train_lengths is not None:
        max_tokens = data.extras.get("max_tokens")
        plan = BucketedBatches(
            data.train_lengths, config.batch_size, config.seed, max_tokens=max_tokens
        )
    else:
        plan = ShuffledBatches(len(data.train), config.batch_size, config.seed)
    train = BatchStream(
        data.train, plan, data.collate, seed=config.seed, rank=dist.rank, world_size=dist.world_size
    )
    val_plan = SequentialBatches(len(data.val), config.batch_size)
    return train, BatchStream(data.val, val_plan, data.collate, seed=config.seed)


def build_recipe_model(recipe: Recipe, data: TaskData, seed: int) -> TformerModel:
    """The recipe's model, with the fields the data fixes, initialised from `seed` (or
    `init_from`), and with the `[lora]` adapters if the recipe has that table: the base is
    then frozen, and its adapters are checked to fit PEFT's format before any step runs."""
    fields = dict(data.model_fields)
    if "arch" not in recipe.model and "preset" not in recipe.model:
        fields["arch"] = TASK_ARCH[data.task]
    if data.task in TASK_HEADS:
        fields["head"] = TASK_HEADS[data.task]
    if "labels" in data.extras:
        fields["labels"] = tuple(data.extras["labels"])
    config = recipe.model_config(fields)
    if config.arch != TASK_ARCH[data.task]:
        raise ConfigError(
            f"task={data.task!r} trains an arch={TASK_ARCH[data.task]!r} model, "
            f"but [model] describes arch={config.arch!r}"
        )
    torch.manual_seed(seed)
    model = build_model(config)
    if "init_from" in recipe.model:
        copy_matching_weights(recipe.pretrained(), model)
    lora = recipe.lora_config()
    if lora is not None:
        add_lora(model, lora)
    return model


def peft_refusal(model: TformerModel) -> str | None:
    """Why PEFT's format cannot hold the model's adapters (None: it can). Asked before the
    first step, so that a run never finds out at its end: a model no Hugging Face family
    holds (e.g. a mean-pooled classifier), or a layer trained in full that is part of a fused
    Hugging Face layer, keeps its adapters in the run's checkpoints only."""
    try:
        peft_target_names(model)
    except TformerError as error:
        return str(error).splitlines()[0].split(";")[0]
    return None


def copy_matching_weights(source: TformerModel, target: TformerModel) -> list[str]:
    """Copy every tensor whose name and shape match (fine-tuning: a pretrained encoder under a
    new task head); returns the names left at their fresh initialisation."""
    own = target.state_dict()
    shared = {
        name: tensor
        for name, tensor in source.state_dict().items()
        if name in own and own[name].shape == tensor.shape
    }
    target.load_state_dict(shared, strict=False)
    return sorted(set(own) - set(shared))


def train_recipe(recipe: Recipe, run_dir: str | Path, *, resume: bool = False) -> TrainResult:
    """Train what `recipe` describes into `run_dir` (resuming from its latest checkpoint).

    The run directory gets the recipe as trained (`recipe.toml`, with the max_steps a time
    budget gave), the prepared data, metrics and checkpoints, and with `[lora]` the final
    adapters in PEFT's format (`adapters/`). A failure before the first checkpoint leaves
    nothing behind (see `removed_on_failure`).
    """
    run_dir = Path(run_dir)
    config = recipe.train_config()  # a bad [training], [lora] or [eval] fails before anything
    recipe.lora_config()
    recipe.eval_config()
    if not resume and holds_run(run_dir):
        raise InputError(
            f"{run_dir} already holds a training run; continue it with --resume {run_dir}, "
            "or train into another directory with --out"
        )
    if resume and config.time_budget_s is not None:
        raise ConfigError(
            "[training] time_budget_s sizes a new run; resume with the run's own "
            f"{RECIPE_FILE}, which holds the max_steps the budget gave"
        )
    dist = init_distributed()
    with removed_on_failure(run_dir, enabled=dist.is_main):
        data = load_data(recipe, run_dir, dist)

        def make_trainer(config: TrainConfig, directory: Path) -> Trainer:
            model = build_recipe_model(recipe, data, config.seed)
            train, val = build_streams(data, config, dist)
            return Trainer(
                model, config, train, val, directory, tokenizer=data.tokenizer, dist=dist
            )

        if config.time_budget_s is not None:
            config = fit_to_budget(config, make_trainer, dist)
            recipe = as_trained(recipe, config)
        trainer = make_trainer(config, run_dir)
        refusal = peft_refusal(trainer.model) if recipe.lora is not None else None
        if dist.is_main:
            (run_dir / RECIPE_FILE).write_text(recipe.to_toml())
            if refusal is not None:
                print(
                    f"tformer: note: the adapters will not be written in PEFT's format "
                    f"({refusal}); the run's checkpoints hold them, and `tformer convert "
                    f"{run_dir} OUT --merge-lora` makes a plain model",
                    file=sys.stderr,
                )
        result = trainer.fit(latest_checkpoint(run_dir) if resume else None)
        if recipe.lora is not None and refusal is None and dist.is_main:
            save_peft_adapters(trainer.model, run_dir / ADAPTERS)
        return result


def as_trained(recipe: Recipe, config: TrainConfig) -> Recipe:
    """`recipe` with its time budget replaced by the max_steps and max_time_s it was sized to,
    so the saved recipe says what was trained and resumes with the same schedule."""
    training = {k: v for k, v in recipe.training.items() if k != "time_budget_s"}
    training |= {"max_steps": config.max_steps, "max_time_s": config.max_time_s}
    return dataclasses.replace(recipe, training=training)


@contextlib.contextmanager
def removed_on_failure(run_dir: Path, *, enabled: bool = True) -> Iterator[None]:
    """If the block fails before the run has a checkpoint, remove what it added: `run_dir`
    (and any parent created for it) if it did not exist, else every file and directory that
    is new in it, so a directory prepared beforehand is left as it was. A run with
    checkpoints is kept, to be resumed."""
    created = next((p for p in reversed(run_dir.absolute().parents) if not p.exists()), None)
    created = created or (None if run_dir.exists() else run_dir)
    before = set(run_dir.rglob("*")) if created is None else set()
    try:
        yield
    except BaseException:
        if enabled and not holds_run(run_dir):
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            else:  # deepest first, so a new directory is empty by the time it is removed
                for path in sorted(set(run_dir.rglob("*")) - before, reverse=True):
                    if path.is_dir() and not path.is_symlink():
                        path.rmdir()
                    else:
                        path.unlink()
        raise
