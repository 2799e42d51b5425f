"""`python -m benchmarks [--quick] [--case PREFIX ...]`: run the side-by-side benchmarks.

Writes benchmarks/results/<device>-<date>{.jsonl,.md,.png}. Quick mode (small sizes, fewer
rounds) is a smoke run of a few minutes; the full mode is the one to record.
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.cases import build_cases
from benchmarks.harness import Case, Measurement, run_case
from benchmarks.machine import machine_facts
from benchmarks.report import rows, write

RESULTS = Path(__file__).resolve().parent / "results"


def measure_memory(case: Case, args: argparse.Namespace) -> dict[tuple[str, str], float | None]:
    """Peak MiB of each contender, each in a fresh process (peak RSS cannot be reset)."""
    peaks: dict[tuple[str, str], float | None] = {}
    for contender in case.contenders:
        command = [sys.executable, "-m", "benchmarks.memory", case.name, contender.name]
        command += ["--device", args.device] + (["--quick"] if args.quick else [])
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = done.stdout.strip().splitlines()
        peaks[(case.name, contender.name)] = float(lines[-1]) if done.returncode == 0 else None
        if done.returncode != 0:
            tqdm.write(f"memory run of {case.name}/{contender.name} failed:\n{done.stderr}")
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 rounds (smoke run)")
    parser.add_argument("--case", nargs="*", default=None, help="only cases with these prefixes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per contender")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--out", type=Path, default=None, help="output path stem")
    args = parser.parse_args()
    device = torch.device(args.device)
    rounds = args.rounds or (3 if args.quick else 7)
    steps_per_round = 2 if args.quick else 5

    facts = machine_facts(device, args.quick)
    print(
        f"{facts['device']}: matmul {facts['matmul_fp32_gflops']:.0f} GFLOP/s fp32, "
        f"{facts['matmul_bf16_gflops']:.0f} GFLOP/s bf16"
    )
    measurements: list[Measurement] = []
    memory: dict[tuple[str, str], float | None] = {}
    cases = build_cases(args.quick, device, names=args.case)
    for case in tqdm(cases, desc="benchmarks", unit="case"):
        try:
            measured = run_case(
                case, rounds=rounds, steps_per_round=steps_per_round, warmup=2, device=device
            )
        except (ImportError, FileNotFoundError, ValueError) as error:
            tqdm.write(f"skipped {case.name}: {error}")
            continue
        measurements += measured
        if not args.no_memory:
            memory.update(measure_memory(case, args))
        for m in measured:
            tqdm.write(f"{case.name:32s} {m.contender:22s} {m.median:10.1f} {m.unit}/s")

    ours = {case.name: case.ours for case in cases}
    records = rows(measurements, memory, ours, facts)
    date = datetime.date.today().isoformat()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(facts["device"])).strip("-").lower()
    stem = args.out or RESULTS / f"{slug}-{date}{'-quick' if args.quick else ''}"
    write(records, facts, stem)
    print(f"wrote {stem}.jsonl, .md and .png")


if __name__ == "__main__":
    main()
