"""Llama 3's rope scaling as llama.cpp stores it: a `rope_freqs.weight` vector of divisors.

llama.cpp's converter writes no rope.scaling.* keys for config.json's "llama3" table. It
computes the divisor that scaling applies to each of the head_dim/2 rotary frequencies (1 for
the high ones, `factor` for the low ones, a blend in the band between) and stores them as the
F32 tensor `rope_freqs.weight`, which its rotary kernel divides each frequency by. Export
writes that vector from the config; import recovers the llama3 table from it.

The table holds one redundant degree of freedom: multiplying original_max_position_embeddings,
low_freq_factor and high_freq_factor by one constant gives the same divisors (only their
ratios and orig / (high - low) matter). Import therefore returns the table with
low_freq_factor = 1 (the value of every Llama 3.x) and refuses a vector that table does not
reproduce.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tformer.checkpoint import CheckpointError
from tformer.modules.position import RopeScaling

ROPE_FREQS = "rope_freqs.weight"
# divisors closer than this (relatively) to 1 or to `factor` count as outside the blended band
BAND_TOLERANCE = 1e-6


def _frequencies(hf_config: dict[str, Any]) -> Tensor:
    """(head_dim/2,) unscaled rotary frequencies, as `RotaryPositions` computes them."""
    head_dim = hf_config.get("head_dim") or (
        hf_config["hidden_size"] // hf_config["num_attention_heads"]
    )
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim
    return 1.0 / float(hf_config.get("rope_theta", 10000.0)) ** exponents


def rope_freqs(hf_config: dict[str, Any]) -> Tensor:
    """(head_dim/2,) divisors of config.json's "llama3" rope table, as llama.cpp stores them."""
    rope = hf_config["rope_scaling"]
    scaling = RopeScaling(
        "llama3",
        float(rope["factor"]),
        float(rope["low_freq_factor"]),
        float(rope["high_freq_factor"]),
        int(rope["original_max_position_embeddings"]),
    )
    frequencies = _frequencies(hf_config)
    return frequencies / scaling.apply(frequencies)


def _band(divisors: np.ndarray, wavelength: np.ndarray, factor: float) -> tuple[float, float]:
    """(original_max_position_embeddings, high_freq_factor) with low_freq_factor = 1.

    In the band the divisor is 1 / ((1 - s) / factor + s) with s = (orig / wavelength - 1) /
    (high - 1), a straight line in 1 / wavelength: two band frequencies fix both numbers.
    With one, orig is what Llama 3's high_freq_factor of 4 gives (rounded: orig counts
    positions) and high what makes that frequency's divisor; with none, orig is the edge of
    the frequencies divided by `factor`, with high = 4.
    """
    band = (divisors > 1 + BAND_TOLERANCE) & (divisors < factor * (1 - BAND_TOLERANCE))
    smooth = (1 / divisors[band] - 1 / factor) / (1 - 1 / factor)
    if band.sum() >= 2:
        slope, intercept = np.polyfit(1 / wavelength[band], smooth, 1)
        return -slope / intercept, 1 - 1 / intercept  # intercept < 0 for a real band
    if band.sum() == 1:
        (length,), (s,) = wavelength[band], smooth
        original = round(length * (3 * s + 1))
        return original, 1 + (original / length - 1) / s
    return math.floor(wavelength[divisors >= factor * (1 - BAND_TOLERANCE)].min()), 4.0


def llama3_from_rope_freqs(
    divisors: Tensor, hf_config: dict[str, Any], source: str
) -> dict[str, Any] | None:
    """config.json's "llama3" rope table that `divisors` (head_dim/2,) come from; None when
    they are all 1 (no scaling). A CheckpointError when no llama3 table gives them."""
    expected = _frequencies(hf_config).shape
    if tuple(divisors.shape) != tuple(expected):
        raise CheckpointError(
            f"{source}: {ROPE_FREQS} has shape {tuple(divisors.shape)}, expected "
            f"{tuple(expected)} (one divisor per rotary frequency)"
        )
    values = divisors.double().numpy()
    factor = float(values.max())
    if np.all(values == 1.0):
        return None
    wavelength = 2 * math.pi / _frequencies(hf_config).double().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        original, high = _band(values, wavelength, factor)
    refused = CheckpointError(
        f"{source}: {ROPE_FREQS} holds frequency divisors that no Llama 3 rope scaling gives "
        "(the only kind of rope_freqs tformer reads)"
    )
    if not (math.isfinite(original) and math.isfinite(high) and high > 1 and original >= 1):
        raise refused
    table = {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": round(float(high), 6),  # noise of F32 divisors off (4.0000002)
        "original_max_position_embeddings": round(original),
    }
    if not torch.allclose(rope_freqs({**hf_config, "rope_scaling": table}), divisors, rtol=1e-5):
        raise refused
    return table
