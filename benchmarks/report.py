"""Results as JSONL (one line per case and contender), a Markdown table and a PNG chart.

Each of our contenders (a case may have several, e.g. tformer in fp32, bf16 and int8) gets
its throughput ratio against every peer of the case: ours / peer, above 1 = we are faster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.harness import Case, Measurement


def rows(
    measurements: list[Measurement],
    memory_mib: dict[tuple[str, str], float | None],
    cases: list[Case],
    facts: dict[str, object],
    checks: dict[tuple[str, str], dict[str, float]] | None = None,
) -> list[dict[str, object]]:
    """One record per measurement, with ratios ours/peer and MFU against the matmul peak."""
    by_name = {case.name: case for case in cases}
    medians = {(m.case, m.contender): m.median for m in measurements}
    records = []
    for m in measurements:
        case = by_name[m.case]
        ratios, memory = {}, {}
        if m.contender in case.ours:
            ratios = {
                peer: m.median / medians[(m.case, peer)]
                for peer in case.peers
                if (m.case, peer) in medians
            }
            ours_peak = memory_mib.get((m.case, m.contender))
            memory = {
                peer: ours_peak / peak
                for peer in case.peers
                if ours_peak and (peak := memory_mib.get((m.case, peer)))
            }
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
                "ours_over_peer": ratios,
                "peak_over_peer": memory,  # ours / peer again, for memory: below 1 = less
                "mfu": mfu,
                "checks": (checks or {}).get((m.case, m.contender)),
                "params": case.params,
                "notes": case.notes,
            }
        )
    return records


def _ratios(record: dict[str, object]) -> str:
    ratios: dict[str, float] = record["ours_over_peer"]  # type: ignore[assignment]
    return ", ".join(f"{ratio:.2f}x {peer}" for peer, ratio in ratios.items())


def _rate(value: float) -> str:
    """One decimal, or three significant digits for slow steps (0.0347 runs/s)."""
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def markdown(records: list[dict[str, object]], facts: dict[str, object]) -> str:
    lines = [
        f"Device: {facts['device']}; CPU {facts['cpu_model']} (torch capability "
        f"{facts['cpu_capability']}, native bf16: {facts['native_bf16']}, AMX: {facts['amx']}); "
        f"torch {facts['torch']}; matmul peak "
        f"{facts['matmul_fp32_gflops']:.0f} GFLOP/s fp32, {facts['matmul_bf16_gflops']:.0f} "
        "GFLOP/s bf16 (measured in the same run).",
        "",
        "| case | contender | median | min–max | peak MiB | ours / peer | MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        peak = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        mfu = "" if r["mfu"] is None else f"{100 * r['mfu']:.0f}%"
        lines.append(
            f"| {r['case']} | {r['contender']} | {_rate(r['median'])} {r['unit']} | "
            f"{_rate(r['min'])}–{_rate(r['max'])} | {peak} | {_ratios(r)} | {mfu} |"
        )
    return (
        "\n".join(lines + _memory_table(records) + _checks_table(records) + _notes(records)) + "\n"
    )


def _memory_table(records: list[dict[str, object]]) -> list[str]:
    compared = [r for r in records if r.get("peak_over_peer")]
    if not compared:
        return []
    lines = ["", "Peak memory, ours / peer (below 1 = less):", "", "| case | contender | ratios |"]
    lines.append("|---|---|---|")
    for r in compared:
        ratios: dict[str, float] = r["peak_over_peer"]  # type: ignore[assignment]
        cells = ", ".join(f"{ratio:.2f}x {peer}" for peer, ratio in ratios.items())
        lines.append(f"| {r['case']} | {r['contender']} | {cells} |")
    return lines


def _checks_table(records: list[dict[str, object]]) -> list[str]:
    checked = [r for r in records if r["checks"]]
    names = list(dict.fromkeys(name for r in checked for name in r["checks"]))  # type: ignore[union-attr]
    if not checked:
        return []
    lines = ["", "Checks:", "", f"| case | contender | {' | '.join(names)} |"]
    lines.append("|---|---|" + "---|" * len(names))
    for r in checked:
        values: dict[str, float] = r["checks"]  # type: ignore[assignment]
        cells = " | ".join(f"{values[n]:.3f}" if n in values else "" for n in names)
        lines.append(f"| {r['case']} | {r['contender']} | {cells} |")
    return lines


def _notes(records: list[dict[str, object]]) -> list[str]:
    cases = {r["case"]: r for r in records}  # one line per case
    notes = [
        f"- {name} ({', '.join(f'{k} {v}' for k, v in r['params'].items())}): {r['notes']}"  # type: ignore[union-attr]
        for name, r in cases.items()
        if r["notes"]
    ]
    return ["", "Notes:", "", *notes] if notes else []


def bar_chart(records: list[dict[str, object]], path: Path) -> None:
    """Ours / peer throughput ratios, one bar per (case, our contender, peer); 1.0 is parity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [
        (f"{r['case']} {r['contender']}\nvs {peer}", ratio)
        for r in records
        for peer, ratio in r["ours_over_peer"].items()  # type: ignore[attr-defined]
    ]
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


def write_records(records: list[dict[str, Any]], facts: dict[str, Any], path: Path) -> None:
    """The machine's facts, then one JSON line per record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        out.write(json.dumps({"machine": facts}) + "\n")
        for record in records:
            out.write(json.dumps(record) + "\n")


def write(records: list[dict[str, object]], facts: dict[str, object], stem: Path) -> None:
    write_records(records, facts, stem.with_suffix(".jsonl"))
    stem.with_suffix(".md").write_text(markdown(records, facts))
    bar_chart(records, stem.with_suffix(".png"))
