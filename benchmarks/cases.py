"""The registry of benchmark cases (issue 7); `names` filters by prefix."""

from __future__ import annotations

import torch

from benchmarks.decoding import generation_cases
from benchmarks.encoder import encoder_inference_case
from benchmarks.harness import Case
from benchmarks.startup import startup_case
from benchmarks.time_to_target import time_to_target_case
from benchmarks.training import gpt_training_case, scaling_cases, seq2seq_training_case
from tformer import kernels


def build_cases(quick: bool, device: torch.device, names: list[str] | None = None) -> list[Case]:
    """Every case, or those whose names start with one of `names`.

    Where bf16 is emulated (AVX2-only CPUs) only the small GPT trains in bf16, to record what
    emulation costs: the medium one takes over 6 min a round there (2 cores) for a precision
    `precision = "auto"` never picks on such a CPU.
    """
    sizes = ["small"] if quick else ["small", "medium"]
    cases = [
        gpt_training_case(size, precision, device)
        for size in sizes
        for precision in ("fp32", "bf16")
        if precision == "fp32" or size == "small" or kernels.bf16_is_fast(device)
    ]
    cases += [encoder_inference_case(device), seq2seq_training_case(quick, device)]
    cases += scaling_cases(quick, device)
    cases += generation_cases(quick, device)
    cases += startup_case(device)
    cases += [] if quick else time_to_target_case(device)  # whole training runs: minutes
    if names:
        cases = [c for c in cases if any(c.name.startswith(n) for n in names)]
    return cases
