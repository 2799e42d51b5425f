"""`train_recipe`: recipe -> data, model, Trainer; what `tformer train` and the demo call."""

from __future__ import annotations

from pathlib import Path

import torch

from tformer.checkpoint import holds_run, latest_checkpoint
from tformer.data import TASK_ARCH, BatchStream, TaskData, build_task_data
from tformer.data.batching import BucketedBatches, SequentialBatches, ShuffledBatches
from tformer.models import TformerModel, build_model
from tformer.training.config import TrainConfig
from tformer.training.distributed import Distributed, barrier, init_distributed
from tformer.training.recipe import RECIPE_FILE, Recipe
from tformer.training.trainer import Trainer, TrainResult

TASK_HEADS = {"mlm": "masked-lm", "classification": "sequence-classification"}


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
    """The recipe's model, with the fields the data fixes, initialised from `seed`."""
    fields = dict(data.model_fields)
    if "arch" not in recipe.model and "preset" not in recipe.model:
        fields["arch"] = TASK_ARCH[data.task]
    if data.task in TASK_HEADS:
        fields["head"] = TASK_HEADS[data.task]
    if "labels" in data.extras:
        fields["labels"] = tuple(data.extras["labels"])
    config = recipe.model_config(fields)
    if config.arch != TASK_ARCH[data.task]:
        raise ValueError(
            f"task={data.task!r} trains an arch={TASK_ARCH[data.task]!r} model, "
            f"but [model] describes arch={config.arch!r}"
        )
    torch.manual_seed(seed)
    model = build_model(config)
    if "init_from" in recipe.model:
        copy_matching_weights(recipe.pretrained(), model)
    return model


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
    """Train what `recipe` describes into `run_dir` (resuming from its latest checkpoint)."""
    run_dir = Path(run_dir)
    config = recipe.train_config()  # a bad [training] table fails before anything else
    if not resume and holds_run(run_dir):
        raise ValueError(
            f"{run_dir} already holds a training run; continue it with --resume {run_dir}, "
            "or train into another directory with --out"
        )
    dist = init_distributed()
    data = load_data(recipe, run_dir, dist)
    model = build_recipe_model(recipe, data, config.seed)
    train, val = build_streams(data, config, dist)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RECIPE_FILE).write_text(recipe.to_toml())
    trainer = Trainer(model, config, train, val, run_dir, tokenizer=data.tokenizer, dist=dist)
    return trainer.fit(latest_checkpoint(run_dir) if resume else None)
