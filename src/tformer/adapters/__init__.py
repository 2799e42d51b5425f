"""Adapters applied to a model from outside: LoRA, and PEFT's file format for it."""

from tformer.adapters.lora import (
    ALL_LINEAR,
    LoraAdapter,
    LoraConfig,
    add_lora,
    lora_adapters,
    merge_and_unload_lora,
    merge_lora,
    unmerge_lora,
)
from tformer.adapters.peft_format import (
    load_peft_adapters,
    peft_target_names,
    save_peft_adapters,
)

__all__ = [
    "ALL_LINEAR",
    "LoraAdapter",
    "LoraConfig",
    "add_lora",
    "load_peft_adapters",
    "lora_adapters",
    "merge_and_unload_lora",
    "merge_lora",
    "peft_target_names",
    "save_peft_adapters",
    "unmerge_lora",
]
