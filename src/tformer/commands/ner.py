"""`tformer ner MODEL TEXT...`: the named entities of each text, with character spans."""

from __future__ import annotations

import argparse
import dataclasses
import json

from tformer.commands import MODEL_HELP, read_texts


def run(args: argparse.Namespace) -> None:
    from tformer.loading import load
    from tformer.pipelines import ner

    model, tokenizer = load(args.model, require_tokenizer=True)
    texts = read_texts(args.texts, args.file)
    found = ner(model, tokenizer, texts)
    if args.json:
        rows = [
            {"text": text, "entities": [dataclasses.asdict(e) for e in entities]}
            for text, entities in zip(texts, found, strict=True)
        ]
        print(json.dumps(rows, ensure_ascii=False))
        return
    for text, entities in zip(texts, found, strict=True):
        print(text)
        for e in entities:
            print(f"  {e.label}\t{e.text!r}\t{e.start}-{e.end}\t{e.score:.3f}")
        if not entities:
            print("  (no entities)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ner",
        help="named entities of texts with a token-classification encoder",
        description="Tag each text with a token classifier (e.g. a *ForTokenClassification "
        "trained on CoNLL-2003) and print its entities: label, text, character span "
        "start-end (end exclusive) and score. A word takes the tag of its first sub-word "
        "piece; adjacent words join while their IOB tags continue one entity (B- begins "
        "one, I- continues it); words tagged O are left out. Same grouping as transformers' "
        'token-classification pipeline with aggregation_strategy="first".',
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--file", help="also read texts from this file, one per line")
    p.add_argument(
        "--json",
        action="store_true",
        help='print [{"text", "entities": [{"label", "text", "start", "end", "score"}]}]',
    )
    p.set_defaults(handler=run)
