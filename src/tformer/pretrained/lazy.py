"""Checkpoint tensors read one at a time, when the model's loader asks for them.

Importing a checkpoint by first reading every tensor into a dict and then copying the dict
into a freshly built model holds two full copies of the weights at once: for SmolLM2-135M
that doubled the peak memory of `tformer.load` (about 1 GiB against `transformers`' 0.5).
A `LazyTensors` mapping makes each tensor only when it is looked up, and the loader copies it
into the model straight away, so the peak is the model plus one tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from torch import Tensor


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
