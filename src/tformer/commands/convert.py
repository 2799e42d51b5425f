"""`tformer convert SRC DST [--to tformer|hf|gguf] [--type ...]`: between tformer, Hugging
Face and GGUF."""

from __future__ import annotations

import argparse

from tformer.errors import InputError

GGUF_TYPES = ("f32", "f16", "q8_0", "q4_1")  # gguf_export.FILE_TYPES, without importing it


def run(args: argparse.Namespace) -> None:
    import tformer

    if args.type is not None and args.to != "gguf":
        raise InputError(f"--type applies to --to gguf only, not --to {args.to}")
    if args.merge_lora:
        from tformer.training.merged_run import load_merged_run

        model, tokenizer = load_merged_run(args.src)
    else:
        model, tokenizer = tformer.load(args.src)
    kind = args.to
    if args.to == "hf":
        from tformer.pretrained import save_hf_directory

        save_hf_directory(model, args.dst, tokenizer)
    elif args.to == "gguf":
        from tformer.pretrained import save_gguf

        if tokenizer is None:
            raise InputError(f"{args.src} has no tokenizer; a GGUF file for llama.cpp needs one")
        save_gguf(model, args.dst, tokenizer, file_type=args.type or "f16")
        kind = f"gguf {args.type or 'f16'}"
    else:
        model.save_pretrained(args.dst, tokenizer)
    print(f"wrote {args.dst} ({kind} format, {model.num_parameters() / 1e6:.1f}M parameters)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint (tformer, Hugging Face or GGUF) to tformer, HF or GGUF",
        description="Load SRC with tformer.load (a tformer checkpoint, a Hugging Face "
        "directory or a .gguf file) and write it to DST as a tformer checkpoint, as a "
        "Hugging Face directory that transformers loads, or as a GGUF file that llama.cpp "
        "runs (decoders of the llama, mistral, qwen2 and qwen3 families, with a byte-level "
        "BPE tokenizer; tokenizer and chat template go into the file).",
    )
    p.add_argument("src", metavar="SRC", help="checkpoint directory or .gguf file")
    p.add_argument("dst", metavar="DST", help="directory (tformer, hf) or .gguf file to write")
    p.add_argument(
        "--to",
        choices=("tformer", "hf", "gguf"),
        default="tformer",
        help="output format (default tformer)",
    )
    p.add_argument(
        "--type",
        choices=GGUF_TYPES,
        default=None,
        help="GGUF weight type of the matrices (default f16): f32, f16, q8_0 (8-bit blocks "
        "of 32) or q4_1 (4-bit blocks of 32 with scale and minimum); norms and biases stay "
        "f32, a matrix whose rows are not whole blocks of 32 is written f16",
    )
    p.add_argument(
        "--merge-lora",
        action="store_true",
        help="SRC is a `tformer train` run with a [lora] table: merge its adapters into the "
        "base weights and write a plain model (--to hf loads in transformers, --to gguf in "
        "llama.cpp)",
    )
    p.set_defaults(handler=run)
