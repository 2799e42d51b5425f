"""`tformer translate MODEL [FILE] --beams 4`: one translation per input line."""

from __future__ import annotations

import argparse
import sys

from tformer.commands import MODEL_HELP


def _read_lines(source: str | None) -> list[str]:
    """The lines of file `source`, or of stdin for None or "-"; both must be UTF-8."""
    from tformer.data.records import decode_utf8, read_utf8

    if source is None or source == "-":
        return decode_utf8(sys.stdin.buffer.read(), "<stdin>").splitlines()
    return read_utf8(source).splitlines()


def run(args: argparse.Namespace) -> None:
    from tformer.commands.generate import (
        decoding_options,
        load_draft,
        load_for_generation,
        one_line,
    )
    from tformer.errors import InputError
    from tformer.generation import make_config
    from tformer.models import EncoderDecoder
    from tformer.pipelines import translate

    model, tokenizer = load_for_generation(args.model, args.device, quantize=args.quantize)
    # Model and options are checked before reading the input (stdin may be a terminal).
    if not isinstance(model, EncoderDecoder):
        raise InputError(f"{args.model} is not an encoder-decoder model; use `tformer generate`")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be >= 1")
    options = decoding_options(args, room=model.config.max_seq_len - 1)  # after the start token
    make_config(model, **options)
    options["draft_model"] = load_draft(args)
    lines = _read_lines(args.input)
    for text in translate(model, tokenizer, lines, batch_size=args.batch_size, **options):
        sys.stdout.write(one_line(text) + "\n")  # outputs map 1:1 onto input lines


def register(sub: argparse._SubParsersAction) -> None:
    from tformer.commands.generate import add_decoding_options

    p = sub.add_parser(
        "translate",
        help="translate lines of text with an encoder-decoder model",
        description="Read lines from FILE (or stdin) and write one translation per line, "
        "decoded with beam search (--beams) or greedily, with a model loaded by tformer.load.",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("input", metavar="FILE", nargs="?", help="input text (default: stdin)")
    p.add_argument("--batch-size", type=int, default=16, help="lines decoded together")
    add_decoding_options(
        p, max_new_tokens=128, past_context="at most the model's context (after the start token)"
    )
    p.set_defaults(handler=run, beams=4)
