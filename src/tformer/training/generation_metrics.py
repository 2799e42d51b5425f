"""Metrics that need decoding: exact match (copy task) and sacreBLEU (translation).

Decoding is the translation pipeline's (`tformer.pipelines.translate.decode_sources`), so the
scores measure what `tformer translate` outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from tformer.errors import InputError
from tformer.models import EncoderDecoder
from tformer.pipelines.translate import decode_sources
from tformer.tokenizer import Tokenizer


def exact_match(
    model: EncoderDecoder, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], **options
) -> float:
    """Fraction of pairs whose greedy output equals the target exactly (copy/reverse tasks)."""
    longest = max(len(t) for _, t in pairs)
    predictions = decode_sources(
        model, [s for s, _ in pairs], max_new_tokens=longest + 1, **options
    )
    hits = sum(p == list(t) for p, (_, t) in zip(predictions, pairs, strict=True))
    return hits / len(pairs)


def corpus_bleu(
    model: EncoderDecoder,
    tokenizer: Tokenizer,
    sources: Sequence[Sequence[int]],
    references: Sequence[str],
    *,
    num_beams: int = 4,
    max_new_tokens: int = 128,
    **options,
) -> tuple[float, list[str]]:
    """sacreBLEU (13a tokenisation, the standard reported score) and the hypotheses.

    sacrebleu is an optional dependency (`pip install tformer[eval]`), imported here only.
    """
    try:
        import sacrebleu
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise InputError("BLEU needs sacrebleu: pip install 'tformer[eval]'") from error
    outputs = decode_sources(
        model, sources, max_new_tokens=max_new_tokens, num_beams=num_beams, **options
    )
    hypotheses = [tokenizer.decode(ids) for ids in outputs]
    return sacrebleu.corpus_bleu(hypotheses, [list(references)]).score, hypotheses
