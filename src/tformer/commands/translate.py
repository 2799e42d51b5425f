"""`tformer translate MODEL [FILE] --beams 4`: one translation per input line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from tformer.commands import MODEL_HELP


def translate_lines(
    model: Any, tokenizer: Any, lines: list[str], *, batch_size: int, **options: Any
) -> Iterator[str]:
    """Translate `lines` in length-sorted batches (less padding); yield outputs in input order.

    Empty lines give empty outputs; a line longer than the model's context is an error, raised
    before any decoding. Sources are right-padded: the encoder's padding mask
    makes the side irrelevant, and positions then start at 0 as in training.
    """
    from tformer.commands.generate import end_token_ids, one_line
    from tformer.data.collate import pad, padding_mask
    from tformer.generation import generate
    from tformer.generation.text import decode_rows

    sources = [tokenizer.encode(line) if line.strip() else [] for line in lines]
    limit = model.config.max_seq_len
    too_long = [i for i, source in enumerate(sources) if len(source) > limit]
    if too_long:  # checked before decoding anything, so no work is thrown away
        first = too_long[0]
        raise ValueError(
            f"input line {first + 1} has {len(sources[first])} tokens but the model's context "
            f"is max_seq_len={limit} ({len(too_long)} line(s) too long); shorten or split them"
        )
    order = sorted((i for i, s in enumerate(sources) if s), key=lambda i: len(sources[i]))
    outputs = [""] * len(lines)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = [sources[i] for i in chunk]
        ids = pad(batch, model.config.pad_id or 0).to(device)
        new_tokens = generate(model, ids, padding_mask(batch).to(device), **options)
        texts = decode_rows(tokenizer, new_tokens, end_token_ids(model))
        for i, text in zip(chunk, texts, strict=True):
            outputs[i] = one_line(text)
    yield from outputs


def _read_lines(source: str | None) -> list[str]:
    """The lines of file `source`, or of stdin for None or "-"; both must be UTF-8."""
    from tformer.data.records import decode_utf8, read_utf8

    if source is None or source == "-":
        return decode_utf8(sys.stdin.buffer.read(), "<stdin>").splitlines()
    return read_utf8(source).splitlines()


def run(args: argparse.Namespace) -> None:
    from tformer.commands.generate import decoding_options, load_for_generation
    from tformer.generation import make_config
    from tformer.models import EncoderDecoder

    model, tokenizer = load_for_generation(args.model, args.device, quantize=args.quantize)
    if not isinstance(model, EncoderDecoder):
        raise ValueError(f"{args.model} is not an encoder-decoder model; use `tformer generate`")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} must be >= 1")
    options = decoding_options(args, room=model.config.max_seq_len - 1)  # after the start token
    make_config(model, **options)  # a bad option fails now, not after reading the input
    lines = _read_lines(args.input)
    for text in translate_lines(model, tokenizer, lines, batch_size=args.batch_size, **options):
        sys.stdout.write(text + "\n")


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
