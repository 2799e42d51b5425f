"""`tformer convert SRC DST [--to hf|tformer]`: between tformer, Hugging Face and GGUF."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> None:
    import tformer
    from tformer.pretrained import save_hf_directory

    if args.merge_lora:
        from tformer.training.merged_run import load_merged_run

        model, tokenizer = load_merged_run(args.src)
    else:
        model, tokenizer = tformer.load(args.src)
    if args.to == "hf":
        save_hf_directory(model, args.dst, tokenizer)
    else:
        model.save_pretrained(args.dst, tokenizer)
    print(f"wrote {args.dst} ({args.to} format, {model.num_parameters() / 1e6:.1f}M parameters)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint (tformer, Hugging Face or GGUF) to tformer or HF format",
        description="Load SRC with tformer.load (a tformer checkpoint, a Hugging Face "
        "directory or a .gguf file) and write it to DST as a tformer checkpoint or as a "
        "Hugging Face directory that transformers loads.",
    )
    p.add_argument("src", metavar="SRC", help="checkpoint directory or .gguf file")
    p.add_argument("dst", metavar="DST", help="directory to write")
    p.add_argument(
        "--to", choices=("tformer", "hf"), default="tformer", help="output format (default tformer)"
    )
    p.add_argument(
        "--merge-lora",
        action="store_true",
        help="SRC is a `tformer train` run with a [lora] table: merge its adapters into the "
        "base weights and write a plain model (e.g. --to hf loads in transformers)",
    )
    p.set_defaults(handler=run)
