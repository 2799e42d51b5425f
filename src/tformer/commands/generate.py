"""`tformer generate MODEL --prompt TEXT`: continue text with a decoder-only LM."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from tformer.commands import MODEL_HELP
from tformer.errors import InputError

if TYPE_CHECKING:  # the command imports the library only when it runs
    from tformer.models import TformerModel
    from tformer.tokenizer import Tokenizer


def add_decoding_options(
    p: argparse.ArgumentParser, *, max_new_tokens: int, past_context: str
) -> None:
    """The options of `tformer.generation.generate` (shared with `tformer translate`);
    `past_context` says what happens to new tokens beyond the model's context."""
    p.add_argument(
        "--max-new-tokens",
        type=int,
        metavar="N",
        help=f"default: {max_new_tokens}; {past_context}",
    )
    p.set_defaults(default_max_new_tokens=max_new_tokens)
    p.add_argument(
        "--beams", type=int, default=1, metavar="K", help="beam width (default %(default)s)"
    )
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam score / length**this")
    p.add_argument(
        "--sample",
        action="store_true",
        help="sample instead of greedy (implied by --temperature/--top-k/--top-p/--min-p)",
    )
    p.add_argument("--temperature", type=float, help="sampling temperature (default 1.0)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, help="nucleus sampling: smallest set with mass p")
    p.add_argument("--min-p", type=float, help="drop tokens below min-p x the best's prob")
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, help="seed for reproducible sampling")
    p.add_argument("--static-cache", action="store_true", help="preallocated KV cache")
    p.add_argument(
        "--compile",
        action="store_true",
        help="compile the decode step (with a static KV cache); on the CPU compiled ahead of "
        "time once per model and shape (minutes) and kept in the cache directory "
        "($TFORMER_CACHE_DIR), which later runs load in a second",
    )
    p.add_argument(
        "--prompt-lookup",
        type=int,
        default=0,
        metavar="K",
        help="speculative decoding without a draft model: guess up to K next tokens from what "
        "followed the last few tokens earlier in the prompt/output and check them in one "
        "forward pass; the output is exactly greedy decoding's, faster when the output "
        "repeats its input (quoting, summarising, editing). Greedy only (default 0: off)",
    )
    p.add_argument(
        "--draft",
        metavar="MODEL",
        help="speculative decoding with a draft model: a smaller model with the same "
        "tokenizer (or MODEL itself with --draft-quantize int4) guesses --draft-tokens tokens, "
        "the model checks them in one forward pass; the output is exactly greedy decoding's. "
        "Greedy only",
    )
    p.add_argument(
        "--draft-tokens",
        type=int,
        default=4,
        metavar="K",
        help="tokens the draft guesses per pass (default %(default)s)",
    )
    p.add_argument(
        "--draft-quantize", choices=("int8", "int4"), help="quantise the draft's weights"
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--quantize",
        choices=("int8", "int4"),
        help="weight-only quantised linear layers for faster decoding on the CPU: int8, or "
        "int4 (4-bit groups of 32, 8-bit output projection; the fastest) -- speed and "
        "perplexity in docs/performance.md",
    )


def decoding_options(args: argparse.Namespace, room: int | None = None) -> dict[str, Any]:
    """Keyword arguments for `generate` from the parsed decoding options. `room`: how many
    new tokens the model's context has space for, where they cannot go past it (the default
    is cut to it). Sampling follows the library's rule: a sampling option samples."""
    from tformer.generation.config import SAMPLING_OPTIONS

    default = (
        args.default_max_new_tokens if room is None else min(args.default_max_new_tokens, room)
    )
    sampling = {name: getattr(args, name) for name in SAMPLING_OPTIONS}
    options = {name: value for name, value in sampling.items() if value is not None}
    return dict(
        options,
        max_new_tokens=args.max_new_tokens or default,
        num_beams=args.beams,
        length_penalty=args.length_penalty,
        do_sample=True if args.sample else None,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        static_cache=args.static_cache,
        compile_step=args.compile,
        prompt_lookup_tokens=args.prompt_lookup,
        draft_tokens=args.draft_tokens if args.draft else 0,
    )


def load_draft(args: argparse.Namespace) -> TformerModel | None:
    """The --draft model (on --device, quantised as --draft-quantize says), or None."""
    if not args.draft:
        return None
    return load_for_generation(args.draft, args.device, quantize=args.draft_quantize)[0]


def load_for_generation(
    path: str, device: str, *, quantize: str | None = None, many_rows: bool = False
) -> tuple[TformerModel, Tokenizer]:
    """`tformer.load` the model (eval mode, on `device`, quantised weights if asked: "int8" or
    "int4", for products of many rows too with `many_rows`) and insist on its tokenizer."""
    import tformer

    if quantize and device != "cpu":
        raise InputError(f"--quantize uses CPU kernels; drop it or use --device cpu, not {device}")
    model, tokenizer = tformer.load(
        path, require_tokenizer=True, quantize=quantize, many_rows=many_rows
    )
    return model.to(device), tokenizer


def one_line(text: str) -> str:
    """Line breaks inside an output become spaces, so outputs map 1:1 onto lines."""
    return " ".join(text.splitlines())


def run(args: argparse.Namespace) -> None:
    import torch

    from tformer.generation import generate, left_pad, stream, stream_text
    from tformer.generation.text import decode_rows, end_token_ids
    from tformer.models import DecoderOnlyLM

    model, tokenizer = load_for_generation(args.model, args.device, quantize=args.quantize)
    if not isinstance(model, DecoderOnlyLM):
        raise InputError(f"{args.model} is not a decoder-only LM; use `tformer translate`")
    if args.chat is not None:
        text = tokenizer.apply_chat_template([{"role": "user", "content": args.chat}])
        rows = [tokenizer.encode(text, add_special_tokens=False)]
    elif args.prompt:
        rows = tokenizer.encode_batch(args.prompt)
    else:
        raise InputError("give --prompt TEXT (one or more) or --chat MESSAGE")
    ids, mask = left_pad(rows, model.config.pad_id or 0)
    ids, mask = ids.to(args.device), mask.to(args.device)
    options = decoding_options(args) | {
        "stop_strings": args.stop or None,
        "tokenizer": tokenizer,
        "draft_model": load_draft(args),
    }
    end_ids = end_token_ids(model.config)
    if args.stream:
        if len(rows) > 1:
            raise InputError("--stream prints one output: give a single --prompt")
        steps = (int(t[0]) for t in stream(model, ids, mask, **options))
        for piece in stream_text(tokenizer, (t for t in steps if t not in end_ids)):
            print(piece, end="", flush=True)
        print()
        return
    with torch.inference_mode():
        new_tokens = generate(model, ids, mask, **options)
    for text in decode_rows(tokenizer, new_tokens, end_ids):
        sys.stdout.write((one_line(text) if len(rows) > 1 else text) + "\n")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="continue a prompt with a decoder-only model",
        description="Continue each --prompt (or answer one --chat message with the model's "
        "chat template) with a model loaded by tformer.load: a tformer checkpoint, a Hugging "
        "Face directory or a .gguf file. Prints one continuation per prompt. Generation may "
        "go past the model's context: the window then slides (see --max-new-tokens).",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    p.add_argument("--chat", metavar="MESSAGE", help="a user message, wrapped in the template")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    add_decoding_options(
        p,
        max_new_tokens=64,
        past_context="past the model's context the window slides: its oldest quarter is "
        "dropped and decoding continues from the rest (beam search and --static-cache/--compile "
        "stay within the context)",
    )
    p.set_defaults(handler=run)
