"""Checkpoint tensors read one at a time, when the model's loader asks for them.

Loading a checkpoint by first reading every tensor into a dict and then copying the dict
into a freshly built model holds two full copies of the weights at once (a memory-mapped
file's pages count once they are read, until the file is closed): for SmolLM2-135M that
doubled the peak memory of `tformer.load`. A `LazyTensors` mapping makes each tensor only
when it is looked up, and the loader copies it into the model straight away, so the peak is
the model plus one tensor. Used for tformer checkpoints, Hugging Face directories and GGUF
files alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from safetensors import SafetensorError, safe_open
from torch import Tensor

from tformer.errors import CheckpointError


class LazyTensors(Mapping[str, Tensor]):
    """Names known up front; each value made by its own loader on every lookup (not kept)."""

    def __init__(self, loaders: Mapping[str, Callable[[], Tensor]]) -> None:
        self._loaders = dict(loaders)

    def __getitem__(self, name: str) -> Tensor:
        return self._loaders[name]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)


def safetensors_file(file: Path) -> LazyTensors:
    """The tensors of one .safetensors file by name, each read when looked up. The header is
    read now, so an unreadable file fails here; a tensor whose bytes are missing fails when
    it is read. Each read opens the file afresh, so no mapping outlives its tensor."""
    with _reading(file), safe_open(str(file), framework="pt") as handle:
        names = list(handle.keys())  # a safe_open handle is not iterable
    return LazyTensors({name: partial(_read_tensor, file, name) for name in names})


@contextmanager
def _reading(file: Path) -> Iterator[None]:
    try:
        yield
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{file} is corrupted or truncated ({error}); re-save or re-download it"
        ) from error


def _read_tensor(file: Path, name: str) -> Tensor:
    with _reading(file), safe_open(str(file), framework="pt") as handle:
        return handle.get_tensor(name)
