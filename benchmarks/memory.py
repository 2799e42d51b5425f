"""Peak memory of one contender, in a fresh process: `python -m benchmarks.memory CASE NAME`.

Run by `benchmarks.__main__` for every contender the harness times in its own process (one run
in a worker process reports its peak itself); prints the peak in MiB on its last line.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.cases import build_cases
from benchmarks.harness import peak_memory_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("case")
    parser.add_argument("contender")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    cases = {case.name: case for case in build_cases(args.quick, device, names=[args.case])}
    contender = next(c for c in cases[args.case].contenders if c.name == args.contender)
    print(f"{peak_memory_of(contender, steps=args.steps, device=device):.1f}")


if __name__ == "__main__":
    main()
