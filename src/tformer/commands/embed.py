"""`tformer embed MODEL SENTENCE...`: sentence embeddings and their cosine similarities."""

from __future__ import annotations

import argparse
import json

from tformer.commands import MODEL_HELP, read_texts


def run(args: argparse.Namespace) -> None:
    from tformer.loading import load
    from tformer.pipelines import cosine_similarity, embed

    model, tokenizer = load(args.model, require_tokenizer=True)
    sentences = read_texts(args.sentences, args.file)
    vectors = embed(
        model, tokenizer, sentences, max_length=args.max_length, truncate=not args.no_truncate
    )
    similarity = cosine_similarity(vectors)
    if args.json:
        print(json.dumps({"embeddings": vectors.tolist(), "similarity": similarity.tolist()}))
        return
    print(f"{len(sentences)} embeddings of size {vectors.shape[1]}; cosine similarity:")
    for i, sentence in enumerate(sentences):
        row = " ".join(f"{v:6.3f}" for v in similarity[i].tolist())
        print(f"[{i}] {row}  {sentence[:60]!r}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="sentence embeddings (mean-pooled, L2-normalised) and cosine similarities",
        description="Embed each sentence with an encoder (e.g. all-MiniLM-L6-v2) and print "
        "the cosine similarity of every pair.",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("sentences", nargs="*", metavar="SENTENCE")
    p.add_argument("--file", help="also read sentences from this file, one per line")
    p.add_argument("--max-length", type=int, help="tokens per sentence (default: model max)")
    p.add_argument(
        "--no-truncate", action="store_true", help="reject longer sentences instead of cutting"
    )
    p.add_argument("--json", action="store_true", help="print embeddings and similarities as JSON")
    p.set_defaults(handler=run)
