"""The `tformer` command: each subcommand is a thin layer over one library function.

User mistakes (bad paths, invalid configs, malformed input) end with one `tformer: error:`
line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from tformer.checkpoint import CheckpointError

Handler = Callable[[argparse.Namespace], int | None]
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, CheckpointError, KeyError)


def _cmd_presets(args: argparse.Namespace) -> None:
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


def _add_presets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the model presets", description="List the named model presets.")
    p.add_argument("--count", action="store_true", help="also build each preset and count its parameters")
    p.set_defaults(handler=_cmd_presets)


def _cmd_demo(args: argparse.Namespace) -> None:
    from tformer.demo import run_demo

    run_demo(args)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the demo job (what `make demo` runs)",
        description="Build one model of each family and run it; see README.md.",
    )
    p.set_defaults(handler=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tformer",
        description="Build, train, load, run and inspect Transformer models "
        "(decoder-only, encoder-only, encoder-decoder).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in (_add_demo, _add_presets):
        add(sub)
    return parser


def _version() -> str:
    from tformer import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args) or 0
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"tformer: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tformer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
