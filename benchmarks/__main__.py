"""`python -m benchmarks [--quick] [--case PREFIX ...]`: run the side-by-side benchmarks.

Writes benchmarks/results/<device>-<date>{.jsonl,.md,.png}. Quick mode (small sizes, fewer
rounds, generation at batch 1 only) is a smoke run of under 5 minutes on 2 cores; the full
mode is the one to record. `--case generation` selects the generation cases (SmolLM2 against
transformers and llama.cpp).
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
from benchmarks.isolation import WorkerError
from benchmarks.machine import machine_facts
from benchmarks.report import rows, write

RESULTS = Path(__file__).resolve().parent / "results"


def measure_memory(
    case: Case, names: list[str], args: argparse.Namespace
) -> dict[tuple[str, str], float | None]:
    """Peak MiB of the contenders `names`, each in a fresh process (peak RSS cannot be reset)."""
    peaks: dict[tuple[str, str], float | None] = {}
    for contender in case.contenders:
        if contender.name not in names:
            continue
        command = [sys.executable, "-m", "benchmarks.memory", case.name, contender.name]
        command += ["--device", args.device] + (["--quick"] if args.quick else [])
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = done.stdout.strip().splitlines()
        peaks[(case.name, contender.name)] = float(lines[-1]) if done.returncode == 0 else None
        if done.returncode != 0:
            tqdm.write(f"memory run of {case.name}/{contender.name} failed:\n{done.stderr}")
    return peaks


def schedule(case: Case, args: argparse.Namespace) -> dict[str, int]:
    """Rounds, steps per round and warm-up steps: --rounds, else the case's, else the mode's."""
    return {
        "rounds": args.rounds or case.rounds or (3 if args.quick else 7),
        "steps_per_round": case.steps_per_round or (2 if args.quick else 5),
        "warmup": 2 if case.warmup is None else case.warmup,
    }


def run_checks(case: Case) -> dict[tuple[str, str], dict[str, float]]:
    """The case's quality checks, keyed by (case, contender); none if their data is missing."""
    if case.checks is None:
        return {}
    try:
        found = case.checks()
    except FileNotFoundError as error:
        tqdm.write(f"checks of {case.name} skipped: {error}")
        return {}
    for name, values in found.items():
        tqdm.write(f"{case.name:32s} {name:22s} {values}")
    return {(case.name, name): values for name, values in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, 3 rounds, generation at batch 1 only (smoke run)",
    )
    parser.add_argument("--case", nargs="*", default=None, help="only cases with these prefixes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per contender")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--out", type=Path, default=None, help="output path stem")
    args = parser.parse_args()
    device = torch.device(args.device)

    facts = machine_facts(device, args.quick)
    print(
        f"{facts['device']}: matmul {facts['matmul_fp32_gflops']:.0f} GFLOP/s fp32, "
        f"{facts['matmul_bf16_gflops']:.0f} GFLOP/s bf16"
    )
    measurements: list[Measurement] = []
    memory: dict[tuple[str, str], float | None] = {}
    checks: dict[tuple[str, str], dict[str, float]] = {}
    cases = build_cases(args.quick, device, names=args.case)
    for case in tqdm(cases, desc="benchmarks", unit="case"):
        try:
            measured = run_case(case, **schedule(case, args), device=device)
        except (ImportError, FileNotFoundError, ValueError, WorkerError) as error:
            tqdm.write(f"skipped {case.name}: {error}")
            continue
        measurements += measured
        in_process = [m.contender for m in measured if m.peak_mib is None]
        memory.update(
            {(m.case, m.contender): m.peak_mib for m in measured if m.peak_mib is not None}
        )
        if not args.no_memory:
            memory.update(measure_memory(case, in_process, args))
        for m in measured:
            tqdm.write(f"{case.name:32s} {m.contender:22s} {m.median:10.1f} {m.unit}/s")
        checks.update(run_checks(case))

    records = rows(measurements, memory, cases, facts, checks)
    date = datetime.date.today().isoformat()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(facts["device"])).strip("-").lower()
    selected = "".join(f"-{name}" for name in args.case or [])  # a partial run keeps its own files
    stem = args.out or RESULTS / f"{slug}-{date}{selected}{'-quick' if args.quick else ''}"
    write(records, facts, stem)
    print(f"wrote {stem}.jsonl, .md and .png")


if __name__ == "__main__":
    main()
