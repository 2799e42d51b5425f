"""`tformer presets`: list the named model presets."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> None:
    from tformer.config import ModelConfig, preset_names
    from tformer.models import build_model

    for name in preset_names():
        config = ModelConfig.preset(name)
        params = build_model(config).num_parameters() if args.count else None
        count = f"  {params / 1e6:8.2f}M params" if params is not None else ""
        print(
            f"{name:18s} {config.arch:16s} layers={config.n_layers} d_model={config.d_model} "
            f"heads={config.n_heads} positional={config.positional}{count}"
        )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "presets", help="list the model presets", description="List the named model presets."
    )
    p.add_argument(
        "--count", action="store_true", help="also build each preset and count its parameters"
    )
    p.set_defaults(handler=run)
