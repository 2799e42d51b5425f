"""The demo job behind `make demo`: one model of each family, built from presets and run."""

from __future__ import annotations

import argparse

import torch

from tformer.config import ModelConfig
from tformer.models import build_model


def run_demo(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    for preset in ("gpt-mini", "bert-mini", "transformer-base"):
        config = ModelConfig.preset(preset)
        model = build_model(config).eval()
        ids = torch.randint(4, config.vocab_size, (2, 16))
        with torch.no_grad():
            if config.arch == "encoder-decoder":
                out = model(ids, ids[:, :8])
            else:
                out = model(ids)
        print(
            f"{preset:17s} {type(model).__name__:14s} {model.num_parameters() / 1e6:6.1f}M params  "
            f"input {tuple(ids.shape)} -> logits {tuple(out.logits.shape)}"
        )
