"""Results as JSONL (one line per case and contender), a Markdown table and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.harness import Measurement


def rows(
    measurements: list[Measurement],
    memory_mib: dict[tuple[str, str], float | None],
    ours: dict[str, str],
    facts: dict[str, object],
) -> list[dict[str, object]]:
    """One record per measurement, with ratios ours/peer and MFU against the matmul peak."""
    by_case: dict[str, dict[str, Measurement]] = {}
    for m in measurements:
        by_case.setdefault(m.case, {})[m.contender] = m
    records = []
    for m in measurements:
        mine = by_case[m.case].get(ours[m.case])
        peak_key = "matmul_bf16_gflops" if m.case.endswith("bf16") else "matmul_fp32_gflops"
        mfu = None
        if m.flops_per_step is not None:
            achieved_gflops = m.flops_per_step * m.median / m.work_per_step / 1e9
            mfu = achieved_gflops / float(facts[peak_key])  # type: ignore[arg-type]
        records.append(
            {
                "case": m.case,
                "contender": m.contender,
                "unit": f"{m.unit}/s",
                "median": m.median,
                "min": min(m.throughputs),
                "max": max(m.throughputs),
                "rounds": len(m.throughputs),
                "peak_mib": memory_mib.get((m.case, m.contender)),
                "ours_over_this": (mine.median / m.median) if mine and mine is not m else None,
                "mfu": mfu,
            }
        )
    return records


def markdown(records: list[dict[str, object]], facts: dict[str, object]) -> str:
    lines = [
        f"Device: {facts['device']}; torch {facts['torch']}; matmul peak "
        f"{facts['matmul_fp32_gflops']:.0f} GFLOP/s fp32, {facts['matmul_bf16_gflops']:.0f} "
        "GFLOP/s bf16 (measured in the same run).",
        "",
        "| case | contender | median | min–max | peak MiB | ours / this | MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        peak = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        ratio = "" if r["ours_over_this"] is None else f"{r['ours_over_this']:.2f}x"
        mfu = "" if r["mfu"] is None else f"{100 * r['mfu']:.0f}%"
        lines.append(
            f"| {r['case']} | {r['contender']} | {r['median']:.1f} {r['unit']} | "
            f"{r['min']:.1f}–{r['max']:.1f} | {peak} | {ratio} | {mfu} |"
        )
    return "\n".join(lines) + "\n"


def bar_chart(records: list[dict[str, object]], path: Path) -> None:
    """Ours / peer throughput ratios, one bar per (case, peer); 1.0 is parity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(f"{r['case']}\nvs {r['contender']}", r["ours_over_this"]) for r in records]
    pairs = [(label, ratio) for label, ratio in pairs if ratio is not None]
    if not pairs:
        return
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(pairs) + 1.5))
    labels, ratios = zip(*pairs, strict=True)
    ax.barh(labels, ratios, color=["tab:green" if r >= 1 else "tab:red" for r in ratios])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("tformer throughput / peer throughput (higher is better)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(records: list[dict[str, object]], facts: dict[str, object], stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".jsonl"), "w") as out:
        out.write(json.dumps({"machine": facts}) + "\n")
        for record in records:
            out.write(json.dumps(record) + "\n")
    stem.with_suffix(".md").write_text(markdown(records, facts))
    bar_chart(records, stem.with_suffix(".png"))
