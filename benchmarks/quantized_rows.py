"""`python -m benchmarks.quantized_rows`: what one weight-only quantised product costs per
number of activation rows, against dense bf16 and fp32 products of the same weight.

The rule behind `kernels.dense_copy`: decoding one sequence multiplies one row, a batched
server 4 to 32, a prompt hundreds. The int4/int8 CPU kernels cost about the same per row,
so they win for few rows (fewer bytes of weights to read) and lose to a dense product for
many: bf16 where it is native, float32 where it is emulated. Every product takes and returns
activations in the weight-only dtype (`kernels.weight_only_dtype`), as the layers do, so the
dense fp32 one includes its two conversions. Shapes are SmolLM2-135M's (576 -> 1536, 1536 ->
576, and its 576 -> 49152 output projection). Medians of interleaved rounds, microseconds per
product. Writes benchmarks/results/<device>-<date>-quantized-rows.md.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.machine import machine_facts
from tformer import kernels
from tformer.quantize import Int4Linear, Int8Linear, int4_supported

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = ((576, 1536), (1536, 576), (576, 49152))
ROWS = (1, 4, 8, 16, 32, 64, 512)


def microseconds(product: Callable[[], torch.Tensor], budget_s: float = 0.05) -> float:
    """Mean time of `product` over a run of about `budget_s` seconds."""
    product()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < budget_s:
        product()
        count += 1
    return (time.perf_counter() - start) / count * 1e6


def contenders(linear: nn.Linear) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The products of one weight: its quantised kernels and dense bf16/fp32."""
    activations = kernels.weight_only_dtype()
    dense_bf16, dense_fp32 = linear.weight.detach().bfloat16(), linear.weight.detach().float()
    found: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "int8 kernel": Int8Linear(linear).packed,
        "dense bf16": lambda x: x.bfloat16() @ dense_bf16.T,
        "dense fp32": lambda x: (x.float() @ dense_fp32.T).to(activations),
    }
    if int4_supported(linear, 32):
        found["int4 kernel"] = Int4Linear(linear).packed
    return {name: (lambda x, f=f: f(x.to(activations))) for name, f in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    facts = machine_facts(torch.device("cpu"), quick=True)
    lines = [
        "# Weight-only quantised products by number of rows",
        "",
        f"Machine: {facts['cpu_model']} ({facts['cpu_capability']}, native bf16: "
        f"{facts['native_bf16']}), {facts['torch_threads']} threads, torch {facts['torch']}. "
        f"Microseconds per product, median of {args.rounds} interleaved rounds "
        "(`python -m benchmarks.quantized_rows`).",
        "",
        "| weight (in -> out) | rows | int4 kernel | int8 kernel | dense bf16 | dense fp32 |",
        "|---|---|---|---|---|---|",
    ]
    with torch.inference_mode():
        for in_features, out_features in SHAPES:
            products = contenders(nn.Linear(in_features, out_features, bias=False))
            for rows in ROWS:
                x = torch.randn(rows, in_features)
                times: dict[str, list[float]] = {name: [] for name in products}
                for _ in range(args.rounds):
                    for name, product in products.items():
                        times[name].append(microseconds(lambda p=product, x=x: p(x)))
                cells = [
                    f"{statistics.median(times[name]):.0f}" if name in times else "-"
                    for name in ("int4 kernel", "int8 kernel", "dense bf16", "dense fp32")
                ]
                lines.append(
                    f"| {in_features} -> {out_features} | {rows} | " + " | ".join(cells) + " |"
                )
                print(lines[-1], flush=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(facts["device"])).strip("-").lower()
    out = RESULTS / f"{slug}-{datetime.date.today().isoformat()}-quantized-rows.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
