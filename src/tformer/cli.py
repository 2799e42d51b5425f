"""The `tformer` command: each subcommand is a thin layer over one library function.

Subcommands live one per module in `tformer.commands` (each defines `register`). User mistakes
(bad paths, invalid configs, malformed input) end with one `tformer: error:` line and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence

from tformer import commands
from tformer.checkpoint import CheckpointError

Handler = Callable[[argparse.Namespace], int | None]
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, CheckpointError, KeyError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tformer",
        description="Build, train, load, run and inspect Transformer models "
        "(decoder-only, encoder-only, encoder-decoder).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
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
