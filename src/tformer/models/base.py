"""What every tformer model shares: its config, saving/loading, parameter counts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import nn

from tformer.checkpoint import (
    CheckpointError,
    atomic_directory,
    load_weights,
    read_config,
    read_weights,
    write_weights,
)
from tformer.config import ModelConfig
from tformer.errors import ConfigError

if TYPE_CHECKING:  # only for the annotation: models sit below the tokenizer's users
    from tformer.tokenizer import Tokenizer

M = TypeVar("M", bound="TformerModel")


class TformerModel(nn.Module):
    """Base class of the three families."""

    config: ModelConfig
    arch: ClassVar[str]  # the ModelConfig.arch a family builds
    _families: ClassVar[dict[str, type[TformerModel]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A family registers itself under its `arch`, so loading a checkpoint finds its class
        without this module importing the families (which import it)."""
        super().__init_subclass__(**kwargs)
        if "arch" in cls.__dict__:
            TformerModel._families[cls.arch] = cls

    @staticmethod
    def family(arch: str) -> type[TformerModel]:
        """The class that builds models of `arch` ("decoder", "encoder", "encoder-decoder")."""
        return TformerModel._families[arch]

    def __init__(self, config: ModelConfig) -> None:
        if config.arch != self.arch:
            raise ConfigError(
                f"{type(self).__name__} needs arch={self.arch!r}, got arch={config.arch!r}"
            )
        super().__init__()
        self.config = config

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        """Parameters counted once even when tied (the embedding shared with the output)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def save_pretrained(self, directory: str | Path, tokenizer: Tokenizer | None = None) -> Path:
        """Write config.json, model.safetensors and (if given) the tokenizer, atomically."""
        with atomic_directory(directory) as tmp:
            write_weights(self, self.config, tmp)
            if tokenizer is not None:
                tokenizer.save(tmp)
        return Path(directory)

    @classmethod
    def from_pretrained(
        cls: type[M], directory: str | Path, *, dtype: torch.dtype | None = None
    ) -> M:
        """Load a checkpoint written by `save_pretrained`, verifying every tensor.

        The model takes the dtype of the stored weights unless `dtype` is given.
        """
        config = read_config(directory)
        model_class = TformerModel.family(config.arch)
        if not issubclass(model_class, cls):
            raise CheckpointError(
                f"{directory} holds a {model_class.__name__} (arch={config.arch!r}), "
                f"not a {cls.__name__}; load it with {model_class.__name__}.from_pretrained "
                "or tformer.load"
            )
        weights = read_weights(directory)
        model = model_class(config)
        stored = {t.dtype for t in weights.values() if t.is_floating_point()}
        model.to(next(iter(stored)) if len(stored) == 1 else torch.float32)
        load_weights(model, weights, str(directory))
        if dtype is not None:
            model.to(dtype)
        return model.eval()  # type: ignore[return-value]
