"""LoRA adapters in PEFT's file format: `adapter_config.json` + `adapter_model.safetensors`.

PEFT names each tensor after the `transformers` module it adapts,
`base_model.model.<HF module>.lora_A.weight` (r, in) and `...lora_B.weight` (out, r); tformer's
A and B have the same shapes. The HF module of a tformer layer comes from the family table
the HF import/export uses (`pretrained.families`), so names are never listed twice. Where
the HF model fuses several of tformer's layers into one (GPT-2's `c_attn`, Phi-3's
`qkv_proj` and `gate_up_proj`, GPT-NeoX's `query_key_value`), PEFT adapts the fused layer as
one: its B spans the fused rows, split and joined here with the same layouts the weight
import uses, so the update is exact both ways (see `_fused_update`, `load_peft_adapters`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from tformer.adapters.lora import (
    LoraAdapter,
    LoraConfig,
    add_lora,
    lora_adapters,
    trained_modules,
)
from tformer.checkpoint import CheckpointError, atomic_directory
from tformer.config import read_json
from tformer.errors import ConfigError, InputError, MissingFileError
from tformer.models import TformerModel
from tformer.pretrained.config_map import family_for_config
from tformer.pretrained.convert import SPLITS, Mapped, fuse_rows, locate, split_rows
from tformer.pretrained.hf import read_safetensors

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
# adapter_config.json settings tformer does not implement, with the value that means "off"
# (absent, null, false or empty is off too). Saving writes only the keys it needs; PEFT's
# LoraConfig fills in the rest with these same defaults.
UNSUPPORTED_OFF: dict[str, Any] = {
    "use_dora": False,
    "bias": "none",
    "lora_bias": False,
    "layers_to_transform": None,
    "layer_replication": None,
    "trainable_token_indices": None,
}
TASK_TYPES = {"decoder": "CAUSAL_LM", "encoder-decoder": "SEQ_2_SEQ_LM"}  # for "lm" heads


@dataclass(frozen=True)
class HFModule:
    """A `transformers` linear module and the tformer linear layers its weight holds: one,
    or a fused weight's parts in row order, laid out in `groups` interleaved blocks (the
    import's SPLITS: 1 for GPT-2's c_attn or Phi-3's qkv_proj, n_heads for GPT-NeoX's
    query_key_value)."""

    name: str
    layers: tuple[str, ...]
    groups: int = 1
    transposed: bool = False  # stored (in, out), GPT-2's Conv1D


def hf_modules(model: TformerModel) -> dict[str, HFModule]:
    """HF module name -> its `HFModule`, for every linear layer of `model` the family table
    maps to a weight PEFT can adapt: copied as it is, transposed (GPT-2's Conv1D, whose
    PEFT adapters have a Linear's shapes all the same) or fused with its neighbours."""
    family, architecture = family_for_config(model.config)
    prefix = "" if architecture in family.bare_architectures else family.base_prefix
    found: dict[str, list[tuple[int, str]]] = {}
    mapping: dict[str, Mapped] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            mapped = locate(f"{name}.weight", family, prefix, model.config)
            if mapped is not None and mapped.transform in ("", "conv1d"):
                hf_name = mapped.hf_name.removesuffix(".weight")
                found.setdefault(hf_name, []).append((mapped.part, name))
                mapping[hf_name] = mapped
    return {
        hf_name: HFModule(
            hf_name,
            tuple(name for _, name in sorted(parts)),
            1 if mapping[hf_name].split is None else SPLITS[mapping[hf_name].split](model.config),
            mapping[hf_name].transform == "conv1d",
        )
        for hf_name, parts in found.items()
    }


def hf_module_names(model: TformerModel) -> dict[str, str]:
    """tformer linear layer name -> the HF module that holds its weight (see `hf_modules`)."""
    return {layer: m.name for m in hf_modules(model).values() for layer in m.layers}


def _hf_names_of(modules: dict[str, HFModule], layers: list[str]) -> dict[str, str]:
    """tformer layer -> the HF module holding it, for `layers`; an InputError naming any
    that no HF linear module holds."""
    names = {layer: m.name for m in modules.values() for layer in m.layers}
    missing = [n for n in layers if n not in names]
    if missing:
        raise InputError(
            f"{', '.join(missing)} has no Hugging Face linear layer, so PEFT cannot hold its "
            "adapter; target other layers"
        )
    return {n: names[n] for n in layers}


def _peft_layout(
    model: TformerModel,
) -> tuple[dict[str, HFModule], dict[str, str], dict[str, str]]:
    """The model's HF linear modules, and the HF module of every adapter and of every layer
    trained in full (modules_to_save); an InputError if PEFT's format cannot hold them."""
    adapters = lora_adapters(model)
    if not adapters:
        raise InputError("the model has no LoRA adapters to save (add them with add_lora)")
    if len({a.config for a in adapters.values()}) > 1:
        raise InputError("the adapters differ in rank, alpha or dropout; PEFT's file holds one")
    config = next(iter(adapters.values())).config
    modules = hf_modules(model)
    trained = _hf_names_of(modules, list(_trained_linears(model, config)))
    fused = sorted({hf for hf in trained.values() if len(modules[hf].layers) > 1})
    if fused:
        raise InputError(
            f"train names part of the fused Hugging Face layer {', '.join(fused)}, which "
            "PEFT's modules_to_save would replace whole; train the whole layer's parts "
            "through adapters instead"
        )
    return modules, _hf_names_of(modules, list(adapters)), trained


def peft_target_names(model: TformerModel) -> dict[str, str]:
    """tformer layer -> Hugging Face module name, for every adapter of `model`; an InputError
    if PEFT's format cannot hold them (no adapters, differing configs, a model no HF family
    holds, a layer with no HF linear). Training calls it before the first step, so a run
    never finds out at its end that its adapters cannot be saved."""
    return _peft_layout(model)[1]


def _peft_alpha(config: LoraConfig, rank: int) -> float:
    """lora_alpha that gives an adapter of `rank` the scaling of `config`'s: PEFT computes
    alpha / rank (alpha / sqrt(rank) with rslora) from the file's numbers."""
    return config.scaling * (math.sqrt(rank) if config.rslora else rank)


def _fused_update(
    module: HFModule, layers: dict[str, nn.Module], adapters: dict[str, LoraAdapter]
) -> tuple[Tensor, Tensor]:
    """PEFT's one (A, B) for a fused HF layer, from our adapters on its parts.

    A stacks the adapted parts' A: (n r, in) for n adapted parts. B holds each adapted
    part's B in the rows of its part of the fused weight and in its own r columns, zeros
    elsewhere: (sum of the parts' out, n r). So B A is, row block by row block, each part's
    own B A (zero for a part without an adapter), exactly: rank n r instead of r."""
    adapted = [name for name in module.layers if name in adapters]
    rank = adapters[adapted[0]].config.rank
    A = torch.cat([adapters[name].A.detach() for name in adapted])
    blocks = []
    for name in module.layers:
        block = A.new_zeros(layers[name].out_features, len(adapted) * rank)
        if name in adapters:
            column = adapted.index(name) * rank
            block[:, column : column + rank] = adapters[name].B.detach()
        blocks.append(block)
    return A, fuse_rows(blocks, module.groups)


def _trained_linears(model: TformerModel, config: LoraConfig) -> dict[str, nn.Linear]:
    """The modules trained in full (`config.train`), each a linear layer PEFT can name."""
    found = trained_modules(model, config)
    odd = [name for name, module in found.items() if not isinstance(module, nn.Linear)]
    if odd:
        raise InputError(
            f"train names {', '.join(odd)}, which are not linear layers; PEFT's "
            "modules_to_save here holds linear layers (e.g. head.classifier)"
        )
    return found  # type: ignore[return-value]


def save_peft_adapters(model: TformerModel, directory: str | Path) -> Path:
    """Write the model's adapters as a PEFT LoRA adapter for the `transformers` model that
    `save_hf_directory` would write (`PeftModel.from_pretrained` loads it), atomically.
    Modules trained in full (`LoraConfig.train`) go in whole, as PEFT's `modules_to_save`.
    Adapters on the parts of a fused HF layer (GPT-2's c_attn, Phi-3's qkv_proj) become one
    adapter of that layer (`_fused_update`), its larger rank in PEFT's `rank_pattern`."""
    modules, hf_names, trained = _peft_layout(model)
    adapters = lora_adapters(model)
    config = next(iter(adapters.values())).config
    layers = dict(model.named_modules())
    tensors = {}
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    for hf_name in sorted(set(hf_names.values())):
        A, B = _fused_update(modules[hf_name], layers, adapters)
        tensors[f"{PEFT_PREFIX}{hf_name}.lora_A.weight"] = A.contiguous()
        tensors[f"{PEFT_PREFIX}{hf_name}.lora_B.weight"] = B.contiguous()
        if A.shape[0] != config.rank:  # PEFT matches a key as a regex ending a module name
            rank_pattern[re.escape(hf_name)] = A.shape[0]
            alpha_pattern[re.escape(hf_name)] = _peft_alpha(config, A.shape[0])
    for name, hf_name in trained.items():
        for part, tensor in layers[name].named_parameters():
            tensors[f"{PEFT_PREFIX}{hf_name}.{part}"] = tensor.detach().contiguous()
    task = TASK_TYPES.get(model.config.arch) if model.config.task_head == "lm" else None
    peft_config = {
        "peft_type": "LORA",
        "task_type": task,
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "use_rslora": config.rslora,
        "target_modules": sorted(set(hf_names.values())),
        "modules_to_save": sorted(trained.values()) or None,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "base_model_name_or_path": None,
        "inference_mode": True,
        "bias": "none",
        # GPT-2's Conv1D: how PEFT merges into the base weight, not the adapters' shapes
        "fan_in_fan_out": any(modules[hf].transposed for hf in hf_names.values()),
    }
    with atomic_directory(directory) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(peft_config, indent=2) + "\n")
        save_file(tensors, str(tmp / WEIGHTS_FILE), {"format": "pt"})
    return Path(directory)


def read_peft_config(directory: Path) -> dict[str, Any]:
    """adapter_config.json, checked to describe a LoRA adapter tformer can apply."""
    file = directory / CONFIG_FILE
    if not file.is_file():
        raise MissingFileError(f"no {CONFIG_FILE} in {directory}: not a PEFT adapter directory")
    values = read_json(file)
    if values.get("peft_type") != "LORA":
        raise CheckpointError(
            f"{file}: peft_type={values.get('peft_type')!r}; tformer reads LoRA adapters only"
        )
    used = [
        f"{key}={values[key]!r}"
        for key, off in UNSUPPORTED_OFF.items()
        if values.get(key) and values[key] != off
    ]
    if used:
        raise CheckpointError(f"{file}: tformer does not implement {', '.join(used)}")
    missing = [key for key in ("r", "lora_alpha") if key not in values]
    if missing:
        raise CheckpointError(f"{file} has no {' or '.join(missing)}: not a PEFT LoRA config")
    return values


def _lora_config(
    values: dict[str, Any], targets: tuple[str, ...], train: tuple[str, ...], rank: int, file: Path
) -> LoraConfig:
    """One config for every adapter of the file, at the largest `rank` it holds: lora_alpha
    grows with it so that the scaling of a file without rank_pattern stays the file's."""
    rslora = bool(values.get("use_rslora"))
    growth = rank / values["r"]
    try:
        return LoraConfig(
            targets=targets,
            rank=rank,
            alpha=values["lora_alpha"] * (math.sqrt(growth) if rslora else growth),
            dropout=values.get("lora_dropout") or 0.0,
            rslora=rslora,
            train=train,
        )
    except ConfigError as error:
        raise CheckpointError(f"{file}: {error}") from error


def _pattern_value(patterns: dict[str, Any] | None, module: str, default: Any) -> Any:
    """A rank_pattern / alpha_pattern entry for an HF module, by PEFT's rule: the first key
    that, as a regular expression, matches the end of the module name after a dot."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def load_peft_adapters(model: TformerModel, directory: str | Path) -> dict[str, LoraAdapter]:
    """Add the PEFT LoRA adapter stored in `directory` to `model` (freezing its weights, as
    `add_lora` does) and fill it with the stored A and B. Returns the adapters by layer.
    Every tensor is checked before the model is touched.

    An adapter of a fused HF layer (GPT-2's c_attn) becomes one adapter per part, each with
    the stored A and its rows of B. tformer's adapters share one rank and scaling, so where
    the file's differ (rank_pattern, alpha_pattern), each update is held at the largest
    rank, zero-padded, with B rescaled: the same update, to float rounding."""
    directory = Path(directory)
    values = read_peft_config(directory)
    stored = dict(read_safetensors(directory))  # adapter_model.safetensors: small, read once
    modules = hf_modules(model)
    whole = _whole_modules(modules, stored)
    pairs = _stored_pairs(modules, {k: v for k, v in stored.items() if k not in whole}, directory)
    layers = dict(model.named_modules())
    for key, (name, part) in whole.items():
        expected = tuple(layers[name].get_parameter(part).shape)
        if tuple(stored[key].shape) != expected:
            raise CheckpointError(
                f"{directory}: {key} has shape {tuple(stored[key].shape)}, expected {expected}"
            )
    rslora = bool(values.get("use_rslora"))
    updates: dict[str, tuple[Tensor, Tensor, float]] = {}  # layer -> A, B, scaling
    for hf_name, parts in pairs.items():
        module = modules[hf_name]
        rank = _pattern_value(values.get("rank_pattern"), hf_name, values["r"])
        alpha = _pattern_value(values.get("alpha_pattern"), hf_name, values["lora_alpha"])
        outs = [layers[name].out_features for name in module.layers]
        label = module.layers[0] if len(outs) == 1 else f"{hf_name} ({', '.join(module.layers)})"
        expected = {"A": (rank, layers[module.layers[0]].in_features), "B": (sum(outs), rank)}
        for part, shape in expected.items():
            found = tuple(parts[part].shape) if part in parts else None
            if found != shape:
                raise CheckpointError(
                    f"{directory}: lora_{part} of {label} is "
                    f"{'missing' if found is None else f'of shape {found}'}, expected {shape}"
                )
        scaling = alpha / (math.sqrt(rank) if rslora else rank)
        for name, B in zip(module.layers, split_rows(parts["B"], outs, module.groups), strict=True):
            updates[name] = (parts["A"], B, scaling)
    trained = tuple(sorted({name for name, _ in whole.values()}))
    largest = max(A.shape[0] for A, _, _ in updates.values())
    config = _lora_config(values, tuple(updates), trained, largest, directory / CONFIG_FILE)
    adapters = add_lora(model, config)
    with torch.no_grad():
        for name, adapter in adapters.items():
            A, B, scaling = updates[name]
            adapter.A.zero_()[: A.shape[0]] = A
            adapter.B.zero_()[:, : B.shape[1]] = B * (scaling / config.scaling)
        for key, (name, part) in whole.items():
            layers[name].get_parameter(part).copy_(stored[key])
    return adapters


def _whole_modules(
    modules: dict[str, HFModule], stored: dict[str, Tensor]
) -> dict[str, tuple[str, str]]:
    """PEFT tensor name -> (tformer layer, parameter) for the tensors of modules saved whole
    (`modules_to_save`): `base_model.model.<HF module>.weight` / `.bias`, no lora_ part."""
    whole = {}
    for key in stored:
        module, _, part = key.removeprefix(PEFT_PREFIX).rpartition(".")
        unfused = module in modules and len(modules[module].layers) == 1
        if ".lora_" not in key and unfused and part in ("weight", "bias"):
            whole[key] = (modules[module].layers[0], part)
    return whole


def _stored_pairs(
    modules: dict[str, HFModule], stored: dict[str, Tensor], directory: Path
) -> dict[str, dict[str, Tensor]]:
    """HF module -> {"A": lora_A, "B": lora_B} for every tensor of the file."""
    pairs: dict[str, dict[str, Tensor]] = {}
    for key, tensor in stored.items():
        module, _, part = key.removeprefix(PEFT_PREFIX).rpartition(".lora_")
        if module not in modules or part not in ("A.weight", "B.weight"):
            raise CheckpointError(f"{directory}: tensor {key!r} adapts no layer of this model")
        pairs.setdefault(module, {})[part[0]] = tensor
    return pairs
