"""The `tformer` command: each subcommand is a thin layer over one library function.

Subcommands live one per module in `tformer.commands` (each defines `register`). A user's
mistake -- the library raises a `TformerError` for those: a bad path, an invalid config,
malformed input -- ends with one `tformer: error:` line and exit status 2. Any other exception
is a bug and keeps its traceback, so it can be reported and fixed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable, Sequence

from tformer import commands
from tformer.errors import TformerError

Handler = Callable[[argparse.Namespace], int | None]
USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130  # 128 + SIGINT: what a shell reports for a process ended by Ctrl-C
BROKEN_PIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`'s yes


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
        status = handler(args) or 0
        sys.stdout.flush()  # a closed pipe shows up here, while it can still be handled
        return status
    except TformerError as error:
        print(f"tformer: error: {error}", file=sys.stderr)
        return USER_ERROR_STATUS
    except KeyboardInterrupt:
        print("tformer: interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    except BrokenPipeError:
        return _stdout_closed()


def _stdout_closed() -> int:
    """The reader of our output went away (`tformer embed ... | head -c 100`): stop quietly,
    as Unix tools do. Following the Python docs' note on SIGPIPE, stdout is pointed at
    /dev/null so that the interpreter's final flush does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return BROKEN_PIPE_STATUS


if __name__ == "__main__":
    sys.exit(main())
