"""LoRA adapters in PEFT's file format: `adapter_config.json` + `adapter_model.safetensors`.

PEFT names each tensor after the `transformers` module it adapts,
`base_model.model.<HF module>.lora_A.weight` (r, in) and `...lora_B.weight` (out, r); tformer's
A and B have the same shapes. The HF module of a tformer layer comes from the family table
the HF import/export uses (`pretrained.families`), so names are never listed twice. A layer
maps only where the table copies its weight unchanged: GPT-2 fuses q, k, v into one Conv1D
(`c_attn`) and stores its weights transposed, so its adapters are refused here.
"""

from __future__ import annotations

import json
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
from tformer.pretrained.convert import locate
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
    "fan_in_fan_out": False,
    "lora_bias": False,
    "rank_pattern": {},
    "alpha_pattern": {},
    "layers_to_transform": None,
    "layer_replication": None,
    "trainable_token_indices": None,
}
TASK_TYPES = {"decoder": "CAUSAL_LM", "encoder-decoder": "SEQ_2_SEQ_LM"}  # for "lm" heads


def hf_module_names(model: TformerModel) -> dict[str, str]:
    """tformer linear layer name -> the `transformers` module name that holds its weight, for
    every linear layer of `model` the family table maps one-to-one."""
    family, architecture = family_for_config(model.config)
    prefix = "" if architecture in family.bare_architectures else family.base_prefix
    names = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            mapped = locate(f"{name}.weight", family, prefix, model.config)
            if mapped is not None and mapped.split is None and not mapped.transform:
                names[name] = mapped.hf_name.removesuffix(".weight")
    return names


def _hf_names_of(model: TformerModel, layers: list[str]) -> dict[str, str]:
    names = hf_module_names(model)
    missing = [n for n in layers if n not in names]
    if missing:
        raise InputError(
            f"{', '.join(missing)} has no one-to-one Hugging Face layer (a fused or transposed "
            "weight, e.g. GPT-2's c_attn), so PEFT cannot hold its adapter; target other layers"
        )
    return {n: names[n] for n in layers}


def peft_target_names(model: TformerModel) -> dict[str, str]:
    """tformer layer -> Hugging Face module name, for every adapter of `model`; an InputError
    if PEFT's format cannot hold them (no adapters, differing configs, a model no HF family
    holds, a fused layer). Training calls it before the first step, so a run never finds out
    at its end that its adapters cannot be saved."""
    adapters = lora_adapters(model)
    if not adapters:
        raise InputError("the model has no LoRA adapters to save (add them with add_lora)")
    if len({a.config for a in adapters.values()}) > 1:
        raise InputError("the adapters differ in rank, alpha or dropout; PEFT's file holds one")
    config = next(iter(adapters.values())).config
    _hf_names_of(model, list(_trained_linears(model, config)))  # modules_to_save must map too
    return _hf_names_of(model, list(adapters))


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
    Modules trained in full (`LoraConfig.train`) go in whole, as PEFT's `modules_to_save`."""
    hf_names = peft_target_names(model)
    adapters = lora_adapters(model)
    config = next(iter(adapters.values())).config
    tensors = {}
    for name, adapter in adapters.items():
        key = PEFT_PREFIX + hf_names[name]
        tensors[f"{key}.lora_A.weight"] = adapter.A.detach().contiguous()
        tensors[f"{key}.lora_B.weight"] = adapter.B.detach().contiguous()
    trained = _hf_names_of(model, list(_trained_linears(model, config)))
    layers = dict(model.named_modules())
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
        "target_modules": sorted(hf_names.values()),
        "modules_to_save": sorted(trained.values()) or None,
        "base_model_name_or_path": None,
        "inference_mode": True,
        "bias": "none",
        "fan_in_fan_out": False,
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
    values: dict[str, Any], targets: tuple[str, ...], train: tuple[str, ...], file: Path
) -> LoraConfig:
    try:
        return LoraConfig(
            targets=targets,
            rank=values["r"],
            alpha=values["lora_alpha"],
            dropout=values.get("lora_dropout") or 0.0,
            rslora=bool(values.get("use_rslora")),
            train=train,
        )
    except ConfigError as error:
        raise CheckpointError(f"{file}: {error}") from error


def load_peft_adapters(model: TformerModel, directory: str | Path) -> dict[str, LoraAdapter]:
    """Add the PEFT LoRA adapter stored in `directory` to `model` (freezing its weights, as
    `add_lora` does) and fill it with the stored A and B. Returns the adapters by layer.
    Every tensor is checked before the model is touched."""
    directory = Path(directory)
    values = read_peft_config(directory)
    stored = dict(read_safetensors(directory))  # adapter_model.safetensors: small, read once
    whole = _whole_modules(model, stored, directory)
    adapter_tensors = {k: v for k, v in stored.items() if k not in whole}
    keys = _stored_keys(model, adapter_tensors, directory)
    trained = tuple(sorted({name for name, _ in whole.values()}))
    config = _lora_config(values, tuple(keys), trained, directory / CONFIG_FILE)
    layers = dict(model.named_modules())
    for key, (name, part) in whole.items():
        expected = tuple(layers[name].get_parameter(part).shape)
        if tuple(stored[key].shape) != expected:
            raise CheckpointError(
                f"{directory}: {key} has shape {tuple(stored[key].shape)}, expected {expected}"
            )
    for name, parts in keys.items():
        linear = layers[name]
        expected = {"A": (config.rank, linear.in_features), "B": (linear.out_features, config.rank)}
        for part, shape in expected.items():
            found = tuple(stored[parts[part]].shape) if part in parts else None
            if found != shape:
                raise CheckpointError(
                    f"{directory}: lora_{part} of {name} is "
                    f"{'missing' if found is None else f'of shape {found}'}, expected {shape}"
                )
    adapters = add_lora(model, config)
    with torch.no_grad():
        for name, adapter in adapters.items():
            adapter.A.copy_(stored[keys[name]["A"]])
            adapter.B.copy_(stored[keys[name]["B"]])
        for key, (name, part) in whole.items():
            layers[name].get_parameter(part).copy_(stored[key])
    return adapters


def _whole_modules(
    model: TformerModel, stored: dict[str, Tensor], directory: Path
) -> dict[str, tuple[str, str]]:
    """PEFT tensor name -> (tformer layer, parameter) for the tensors of modules saved whole
    (`modules_to_save`): `base_model.model.<HF module>.weight` / `.bias`, no lora_ part."""
    ours = {PEFT_PREFIX + hf: name for name, hf in hf_module_names(model).items()}
    whole = {}
    for key in stored:
        module, _, part = key.rpartition(".")
        if ".lora_" not in key and module in ours and part in ("weight", "bias"):
            whole[key] = (ours[module], part)
    return whole


def _stored_keys(
    model: TformerModel, stored: dict[str, Tensor], directory: Path
) -> dict[str, dict[str, str]]:
    """tformer layer -> {"A": PEFT tensor name, "B": ...} for every tensor of the file."""
    ours = {PEFT_PREFIX + hf: name for name, hf in hf_module_names(model).items()}
    keys: dict[str, dict[str, str]] = {}
    for key in stored:
        module, _, part = key.rpartition(".lora_")
        if module not in ours or part not in ("A.weight", "B.weight"):
            raise CheckpointError(f"{directory}: tensor {key!r} adapts no layer of this model")
        keys.setdefault(ours[module], {})[part[0]] = key
    return keys
