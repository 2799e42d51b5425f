"""The benchmark harness: interleaved timing, ratios, MFU and the written report."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks.harness import Case, Contender, run_case
from benchmarks.report import rows, write
from benchmarks.training import gpt_config, matmul_flops, training_flops
from tformer import build_model


class FakeClock:
    """perf_counter stand-in: each step advances it by a known amount, so the test is exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def step_taking(self, seconds: float):
        def step() -> None:
            self.now += seconds

        return lambda: step


def test_interleaved_rounds_give_ratios_of_medians(tmp_path: Path, monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    case = Case(
        name="toy",
        contenders=[
            Contender("tformer", clock.step_taking(0.002), 1e6),
            Contender("peer", clock.step_taking(0.006)),
        ],
        work_per_step=10,
        unit="items",
    )
    measured = run_case(case, rounds=3, steps_per_round=2, warmup=0, device=torch.device("cpu"))
    facts = {"device": "cpu", "torch": "x", "matmul_fp32_gflops": 1.0, "matmul_bf16_gflops": 2.0}
    records = rows(measured, {("toy", "tformer"): 5.0}, {"toy": "tformer"}, facts)
    ours, peer = records
    assert ours["rounds"] == 3 and ours["ours_over_this"] is None
    assert peer["ours_over_this"] == pytest.approx(3.0)  # steps of 2 ms vs 6 ms
    assert ours["median"] == pytest.approx(10 / 0.002)  # 10 items per 2 ms step
    # MFU = flops/step * steps/s / peak: 1e6 flops per 2 ms step on a 1 GFLOP/s machine.
    assert ours["mfu"] == pytest.approx(0.5)
    write(records, facts, tmp_path / "result")
    lines = (tmp_path / "result.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["machine"] == facts and len(lines) == 3
    assert "| toy | peer |" in (tmp_path / "result.md").read_text()
    assert (tmp_path / "result.png").stat().st_size > 0


def test_matmul_flops_counts_every_linear_layer() -> None:
    config = gpt_config(layers=2, width=32, heads=4, block=16)
    model = build_model(config)
    # Per layer: q, k, v, out (4 x 32x32) + up, down (2 x 32x128); plus the 32 x 65 output.
    expected = 2 * (2 * (4 * 32 * 32 + 2 * 32 * 128) + 32 * 65)
    assert matmul_flops(model) == expected
    attention = 4 * 2 * 16 * 32  # 4 * layers * seq_len * width per token
    assert training_flops(config, tokens=10) == 3 * (expected + attention) * 10


@pytest.mark.slow
def test_quick_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks", "--quick", "--case", "gpt-train-small-fp32"]
    command += ["--rounds", "1", "--out", str(tmp_path / "quick")]
    subprocess.run(command, check=True, cwd=Path(__file__).resolve().parents[1])
    records = [json.loads(line) for line in (tmp_path / "quick.jsonl").read_text().splitlines()]
    assert {r.get("contender") for r in records[1:]} == {
        "tformer",
        "transformers-eager",
        "transformers-sdpa",
    }
