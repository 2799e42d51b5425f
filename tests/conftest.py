"""Shared test settings: deterministic seeds, one thread per test worker (pytest -n 2)."""

from __future__ import annotations

import os

import pytest
import torch

# Two xdist workers on two cores: one intra-op thread each avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def torch_threads():
    """Set torch's intra-op thread count for one test (`torch_threads(n)`); restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _conversion_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Converted GGUF files go to a directory of this test session, never the user's cache
    (commands started by the tests inherit it)."""
    os.environ["TFORMER_CACHE_DIR"] = str(tmp_path_factory.mktemp("tformer-cache"))
