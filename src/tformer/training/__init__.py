"""Training: one Trainer for every objective, recipes, checkpoints with exact resume, DDP, FSDP2."""

from tformer.training.config import TrainConfig
from tformer.training.evaluation import evaluate_batches
from tformer.training.recipe import Recipe, load_recipe
from tformer.training.run import train_recipe
from tformer.training.trainer import Trainer, TrainResult

__all__ = [
    "Recipe",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "evaluate_batches",
    "load_recipe",
    "train_recipe",
]
