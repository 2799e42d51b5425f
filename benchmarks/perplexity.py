"""The quality side of reduced precision: held-out perplexity against float32 (issue 6).

A faster bfloat16 or int8 model is only worth having if it predicts text about as well: each
must stay within 1% of the float32 perplexity on held-out text: the first 512 tokens of the
standard validation split of Tiny Shakespeare (its last 10%), the same ids for every variant.
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.decoders import Generator, Ours, Weights
from tformer import Tokenizer

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


def perplexity_checks(
    generators: list[Generator], weights: Weights, ids: torch.Tensor
) -> dict[str, dict[str, float]]:
    """Perplexity of every tformer variant that changes the model's numbers, and its change
    against the float32 one (`Ours()`, which must be among them) in percent."""
    variants = {g.name: g.load for g in generators if isinstance(g.load, Ours)}
    checked = {name: ours for name, ours in variants.items() if not ours.options}
    reference = next(name for name, ours in checked.items() if ours.prepare is None)
    results = {
        name: {"perplexity": perplexity(o.model(weights), ids)} for name, o in checked.items()
    }
    fp32 = results[reference]["perplexity"]
    for name, result in results.items():
        if name != reference:
            result["perplexity_vs_fp32_pct"] = 100 * (result["perplexity"] / fp32 - 1)
    return results
