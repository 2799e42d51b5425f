"""The quality side of reduced precision: held-out perplexity against float32 (issue 6).

A faster bfloat16 or int8 model is only worth having if it predicts text about as well: each
must stay within 1% of the float32 perplexity on held-out text: the first 512 tokens of the
standard validation split of Tiny Shakespeare (its last 10%), the same ids for every variant.

A compiled decode step computes the same weights with other kernels (inductor's, another
order of accumulation), so its perplexity is measured the way it decodes: the held-out ids
fed through the step one at a time (`step_perplexity`), not by one pass over the prompt.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.decoders import Generator, Ours, Weights
from tformer import Tokenizer
from tformer.generation.config import GenerationConfig
from tformer.generation.state import DecodingState

TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
TOKENS = 512


def held_out_ids(
    tokenizer: Tokenizer, text_file: Path = TEXT, n_tokens: int = TOKENS
) -> torch.Tensor:
    """(1, n_tokens) ids from the start of the file's last 10%."""
    if not text_file.is_file():
        raise FileNotFoundError(f"no held-out text at {text_file} (the Tiny Shakespeare file)")
    text = text_file.read_text()
    ids = tokenizer.encode(text[int(len(text) * 0.9) :], add_special_tokens=False)
    return torch.tensor([ids[:n_tokens]])


def perplexity(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """exp(mean next-token loss) over the ids after the first."""
    with torch.inference_mode():
        loss = model(ids[:, :-1], labels=ids[:, 1:]).loss
    return float(loss.float().exp())


def step_perplexity(model: torch.nn.Module, ids: torch.Tensor, **options: bool) -> float:
    """exp(mean next-token loss) over the ids after the first, each position's logits from
    the decode step (`options` of `generate`, e.g. compile_step) after the true tokens
    before it: teacher forcing through the path decoding takes."""
    first = ids[:, :1]
    config = GenerationConfig(max_new_tokens=ids.shape[1] - 1, eos_token_ids=(), **options)
    state = DecodingState(model, first, torch.ones_like(first), config)  # type: ignore[arg-type]
    total = torch.zeros(())
    with torch.inference_mode():
        logits = state.prefill()  # (1, V) predicting ids[:, 1]
        for t in range(1, ids.shape[1]):
            total += F.cross_entropy(logits.float(), ids[:, t], reduction="sum")
            if t + 1 < ids.shape[1]:
                logits = state.advance(ids[:, t])
    return float((total / (ids.shape[1] - 1)).exp())


def perplexity_checks(
    generators: list[Generator], weights: Weights, ids: torch.Tensor
) -> dict[str, dict[str, float]]:
    """Perplexity of every tformer variant that changes the model's numbers (a dtype, a
    quantisation, a compiled step), and its change against the float32 one (`Ours()`, which
    must be among them) in percent. Variants whose options only change how the same numbers
    are computed (a cache) are not checked."""
    variants = {g.name: g.load for g in generators if isinstance(g.load, Ours)}
    checked = {
        name: ours
        for name, ours in variants.items()
        if not ours.options or set(ours.options) == {"compile_step"}
    }
    reference = next(name for name, ours in checked.items() if ours == Ours())
    results = {
        name: {
            "perplexity": step_perplexity(o.model(weights), ids, **o.options)
            if o.options
            else perplexity(o.model(weights), ids)
        }
        for name, o in checked.items()
    }
    fp32 = results[reference]["perplexity"]
    for name, result in results.items():
        if name != reference:
            result["perplexity_vs_fp32_pct"] = 100 * (result["perplexity"] / fp32 - 1)
    return results
