"""`tformer explain`: a self-contained HTML report of what each stage of a model does."""

from __future__ import annotations

import argparse
from pathlib import Path

from tformer.commands import MODEL_HELP
from tformer.errors import InputError


def _png_targets(specs: list[str], out: Path) -> list[tuple[str, Path]]:
    """Parse `--png NAME[=PATH]`; without a path the PNG goes next to the report. Unknown
    names fail here, before a model is loaded."""
    from tformer.explainer.report.figures import figure_name

    targets = []
    for spec in specs:
        name, _, path = spec.partition("=")
        figure_name(name)
        default = out.with_name(f"{out.stem}-{name.replace(':', '-')}.png")
        targets.append((name, Path(path) if path else default))
    return targets


def run(args: argparse.Namespace) -> None:
    import tformer
    from tformer.explainer import compare, explain, save_html, save_png

    if not args.text.strip():  # before loading: a large model takes seconds to load
        raise InputError("--text is empty; give the text to explain, e.g. --text 'To be, or not'")
    if args.compare is not None and (args.png or args.sentences):
        raise InputError("--png and --sentences describe one model; leave them out with --compare")
    pngs = _png_targets(args.png, args.out)
    model, tokenizer = tformer.load(args.model)
    if args.compare is not None:
        base, base_tokenizer = tformer.load(args.compare)
        comparison = compare(
            model,
            base,
            tokenizer or base_tokenizer,  # a merged model saved without one reads the base's
            args.text,
            args.target,
            base_tokenizer=base_tokenizer,
            labels=(str(args.model), str(args.compare)),
            k=args.top_k,
        )
        print(f"wrote {save_html(comparison, args.out)}")
        return
    report = explain(
        model, tokenizer, args.text, args.target, sentences=args.sentences, k=args.top_k
    )
    print(f"wrote {save_html(report, args.out)}")
    for name, path in pngs:
        print(f"wrote {save_png(report, name, path)}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="write an HTML report of what each stage of a model does with a text",
        description="Run MODEL once on --text and write one self-contained HTML page: "
        "tokenisation, embeddings and positional encodings, attention per layer and head, the "
        "residual stream, predictions and logit lens, cross-attention alignment, token "
        "attributions; with --compare BASE, what differs between MODEL and BASE. See "
        "docs/explain.md.",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--text", required=True, help="the input text (the source, for translation)")
    p.add_argument(
        "--target",
        help="decoders: a continuation whose tokens are explained; encoder-decoders: the target "
        "translation (default: the model's greedy output)",
    )
    p.add_argument(
        "--sentences",
        nargs="+",
        default=[],
        metavar="SENTENCE",
        help="encoders: sentences to rank by pooled-embedding similarity to --text",
    )
    p.add_argument(
        "--compare",
        metavar="BASE",
        help="a second model (e.g. the base MODEL was fine-tuned from), with the same "
        "vocabulary and family: the report puts the two side by side and shows what changed "
        "(predictions, logit lens, attention per head)",
    )
    p.add_argument("--out", type=Path, default=Path("explain.html"), help="report file")
    p.add_argument(
        "--png",
        action="append",
        default=[],
        metavar="FIGURE[=PATH]",
        help="also write one figure as PNG (needs matplotlib); FIGURE is positions, "
        "attention[:LAYER[:HEAD]], encoder-attention[:L[:H]], cross-attention[:L[:H]], "
        "residual, lens or attributions; repeatable",
    )
    p.add_argument("--top-k", type=int, default=5, help="predictions shown per position")
    p.set_defaults(handler=run)
