"""Hugging Face model directories: config.json + *.safetensors (one file or index-sharded).

`model_from_hf` is the single path every import takes -- HF directories and GGUF files alike
end in a config.json-style dict plus HF-named tensors -- so parity checked for one source
holds for the other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from tformer.checkpoint import CheckpointError, atomic_directory
from tformer.config import read_json
from tformer.lazy_tensors import LazyTensors, safetensors_file
from tformer.models import TformerModel
from tformer.models.empty import empty_model, materialise
from tformer.pretrained.config_map import (
    architecture_for,
    family_for_config,
    hf_config_from_model,
    model_config_from_hf,
)
from tformer.pretrained.convert import hf_tensors, load_hf_tensors
from tformer.pretrained.families import Family, family_for
from tformer.pretrained.tokenizers import tokenizer_from_hf_directory
from tformer.tokenizer import Tokenizer

INDEX_FILE = "model.safetensors.index.json"


def is_hf_config(values: dict[str, Any]) -> bool:
    """A Hugging Face config.json names its `model_type`; tformer's own names `arch`."""
    return "model_type" in values and "arch" not in values


def _weight_files(directory: Path) -> list[Path]:
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} has no weight_map: tensor name -> shard file")
        shards = sorted(set(weight_map.values()))
        return [directory / shard for shard in shards]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        others = [p.name for p in directory.glob("*.bin")]
        hint = f" (found {', '.join(others)}: re-save with safe_serialization)" if others else ""
        raise CheckpointError(f"{directory} has no *.safetensors weights{hint}")
    return files


def read_safetensors(directory: str | Path) -> LazyTensors:
    """Every tensor of the directory's safetensors file(s), by name, each read when looked up
    (the file headers are read now, so a missing or unreadable file fails here)."""
    loaders: dict[str, Callable[[], Tensor]] = {}
    for file in _weight_files(Path(directory)):
        if not file.is_file():
            raise CheckpointError(f"shard {file.name} listed in {INDEX_FILE} is missing")
        shard = safetensors_file(file)
        loaders.update({name: partial(shard.__getitem__, name) for name in shard})
    return LazyTensors(loaders)


def model_from_hf(
    hf_config: dict[str, Any],
    tensors: Mapping[str, Tensor],
    source: str,
    dtype: torch.dtype = torch.float32,
) -> TformerModel:
    """Build the tformer model config.json describes and fill it with HF-named `tensors`."""
    model, family = empty_hf_model(hf_config, tensors, source)
    return fill_hf_model(model, family, tensors, source, dtype)


def empty_hf_model(
    hf_config: dict[str, Any], tensors: Mapping[str, Tensor], source: str
) -> tuple[TformerModel, Family]:
    """The tformer model config.json describes, on the meta device (`models.empty`), and the
    family whose table maps its `tensors` (whose names can tell how it is tied)."""
    names = hf_config.get("architectures") or [None]
    family = family_for(hf_config.get("model_type", "<missing>"), names[0])
    architecture = architecture_for(hf_config, family, source)
    config = model_config_from_hf(hf_config, family, architecture, source)
    stored_output = family.untied_when_stored  # a stored output projection is not tied
    if config.tie_embeddings and stored_output is not None and stored_output in tensors:
        config = config.replace(tie_embeddings=False)
    return empty_model(config), family


def fill_hf_model(
    model: TformerModel,
    family: Family,
    tensors: Mapping[str, Tensor],
    source: str,
    dtype: torch.dtype,
    *,
    unread: Collection[str] = (),
) -> TformerModel:
    """Give the empty `model` memory in `dtype` and the values of HF-named `tensors`, except
    the tensors named in `unread`, which stay on the meta device for the caller to replace."""
    materialise(model, dtype, unread=unread)
    load_hf_tensors(model, family, tensors, hf_prefix(family, tensors), source, unread=unread)
    return model.eval()


def hf_prefix(family: Family, tensors: Mapping[str, Tensor]) -> str:
    """The prefix of the base model's tensors in `tensors`: a checkpoint of the bare model
    (`LlamaModel`) has none, one with a head (`LlamaForCausalLM`) has the family's."""
    return family.base_prefix if any(n.startswith(family.base_prefix) for n in tensors) else ""


def load_hf_directory(
    directory: str | Path, *, dtype: torch.dtype = torch.float32
) -> tuple[TformerModel, Tokenizer | None]:
    """A tformer model (and the tokenizer, if the directory has one) from an HF directory."""
    directory = Path(directory)
    hf_config = read_json(directory / "config.json")
    model = model_from_hf(hf_config, read_safetensors(directory), str(directory), dtype)
    return model, tokenizer_from_hf_directory(directory)


def save_hf_directory(
    model: TformerModel, directory: str | Path, tokenizer: Tokenizer | None = None
) -> Path:
    """Write `model` as a Hugging Face directory `transformers` can load (atomically)."""
    family, architecture = family_for_config(model.config)
    prefix = "" if architecture in family.bare_architectures else family.base_prefix
    hf_config = hf_config_from_model(model.config, family, architecture)
    with atomic_directory(directory) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        save_file(
            hf_tensors(model, family, prefix), str(tmp / "model.safetensors"), {"format": "pt"}
        )
        if tokenizer is not None:
            tokenizer.save(tmp)
    return Path(directory)
