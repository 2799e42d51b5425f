"""Metrics that need decoding: exact match (copy task), sacreBLEU (translation, and answers
of a fine-tuned chat model) and ROUGE (summaries, headlines).

Decoding is `tformer.pipelines.translate.decode_sources` (the one decoding loop, batched), so
the scores measure what `tformer translate` and `tformer generate` output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tformer.errors import ConfigError, InputError
from tformer.field_types import check_field_types
from tformer.models import EncoderDecoder, TformerModel
from tformer.pipelines.translate import decode_sources
from tformer.tokenizer import Tokenizer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
GENERATION_METRICS = ("bleu", "rouge")


@dataclass(frozen=True)
class EvalConfig:
    """`[eval]` of a recipe: what `tformer evaluate` measures by generating, for task = "sft"
    (translation's BLEU and the copy task's exact match need no table).

    metrics: "bleu" and/or "rouge" of the greedy answers against the reference answers;
    max_new_tokens: the longest answer; batch_size: prompts decoded at once; max_examples:
    the split's first N examples only (None: all).
    """

    metrics: list[str] = field(default_factory=list)
    max_new_tokens: int = 128
    batch_size: int = 16
    max_examples: int | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        unknown = sorted(set(self.metrics) - set(GENERATION_METRICS))
        if unknown:
            raise ConfigError(
                f"metrics: unknown {', '.join(unknown)}; use {', '.join(GENERATION_METRICS)}"
            )
        for name in ("max_new_tokens", "batch_size", "max_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value} must be >= 1")


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


def decoded_texts(
    model: TformerModel,
    tokenizer: Tokenizer,
    inputs: Sequence[Sequence[int]],
    *,
    batch_size: int = 100,
    **options,
) -> list[str]:
    """The model's output text for each input (source or prompt), in the given order; the
    inputs are decoded in length-sorted batches, for less padding."""
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    outputs = decode_sources(model, [inputs[i] for i in order], batch_size=batch_size, **options)
    texts = [""] * len(inputs)
    for i, ids in zip(order, outputs, strict=True):
        texts[i] = tokenizer.decode(ids)
    return texts


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacreBLEU (13a tokenisation, the standard reported score). sacrebleu is an optional
    dependency (`pip install tformer[eval]`), imported here only."""
    try:
        import sacrebleu
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise InputError("BLEU needs sacrebleu: pip install 'tformer[eval]'") from error
    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L F1 x 100, averaged over the examples (Google's `rouge-score`, with its
    Porter stemmer, as summarisation papers report it); an optional dependency."""
    try:
        from rouge_score import rouge_scorer
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise InputError("ROUGE needs rouge-score: pip install 'tformer[eval]'") from error
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        for name, score in scorer.score(reference, hypothesis).items():
            totals[name] += score.fmeasure
    return {name: 100 * total / len(references) for name, total in totals.items()}


def generation_scores(
    metrics: Sequence[str], hypotheses: Sequence[str], references: Sequence[str]
) -> dict[str, float]:
    """The named metrics ("bleu", "rouge": rouge1, rouge2, rougeL) of the hypotheses."""
    scores: dict[str, float] = {}
    if "bleu" in metrics:
        scores["bleu"] = bleu(hypotheses, references)
    if "rouge" in metrics:
        scores |= rouge(hypotheses, references)
    return scores


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
    """sacreBLEU of the model's translations of `sources`, and the translations."""
    outputs = decode_sources(
        model, sources, max_new_tokens=max_new_tokens, num_beams=num_beams, **options
    )
    hypotheses = [tokenizer.decode(ids) for ids in outputs]
    return bleu(hypotheses, references), hypotheses
