"""Metrics that need decoding: exact match (copy task) and sacreBLEU (translation).

Decoding goes through `tformer.generation.generate`, the library's one decoding loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tformer.data.collate import pad, padding_mask
from tformer.generation import generate
from tformer.generation.text import until_end
from tformer.models import EncoderDecoder
from tformer.tokenizer import Tokenizer


@torch.no_grad()
def decode_sources(
    model: EncoderDecoder,
    sources: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 100,
    num_beams: int = 1,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """Greedy (or beam) outputs for each source, cut at EOS. Sources are right-padded, as
    in training (the encoder's padding mask makes the side irrelevant to the result)."""
    model.eval()
    device = next(model.parameters()).device
    end_ids = {model.config.eos_id, model.config.pad_id} - {None}
    outputs: list[list[int]] = []
    for start in range(0, len(sources), batch_size):
        chunk = [list(s) for s in sources[start : start + batch_size]]
        new = generate(
            model,
            pad(chunk, model.config.pad_id or 0).to(device),
            padding_mask(chunk).to(device),
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            length_penalty=length_penalty,
        )
        outputs += [until_end(row, end_ids) for row in new.tolist()]
    return outputs


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
        raise ValueError("BLEU needs sacrebleu: pip install 'tformer[eval]'") from error
    outputs = decode_sources(
        model, sources, max_new_tokens=max_new_tokens, num_beams=num_beams, **options
    )
    hypotheses = [tokenizer.decode(ids) for ids in outputs]
    return sacrebleu.corpus_bleu(hypotheses, [list(references)]).score, hypotheses
