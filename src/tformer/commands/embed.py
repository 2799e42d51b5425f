"""`tformer embed MODEL SENTENCE...`: sentence embeddings and their cosine similarities."""

from __future__ import annotations

import argparse
import json

from tformer.commands import MODEL_HELP, read_texts

PRECISIONS = ("fp32", "bf16", "auto")  # as a recipe's `precision`


def run(args: argparse.Namespace) -> None:
    from tformer import kernels
    from tformer.loading import load
    from tformer.pipelines import cosine_similarity, embed

    # the encoder runs on the CPU; None: the weights' dtype as loaded
    dtype = None if args.precision is None else kernels.precision_dtype(args.precision, "cpu")
    model, tokenizer = load(args.model, require_tokenizer=True, dtype=dtype)
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
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="the encoder's precision (default: the weights' as loaded: fp32 for Hugging Face "
        "and GGUF weights, a tformer checkpoint's own). bf16 runs about twice as fast where "
        "the CPU computes it natively (AVX512-BF16, AMX), at a cosine similarity of 0.9999 or "
        "more to fp32's embeddings (docs/performance.md), and many times slower where it is "
        "emulated (AVX2 only). auto: bf16 where native, else fp32 (as in recipes)",
    )
    p.add_argument("--json", action="store_true", help="print embeddings and similarities as JSON")
    p.set_defaults(handler=run)
