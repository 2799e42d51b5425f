"""Loss curves of a run as a PNG (matplotlib is an optional extra: `tformer[plot]`)."""

from __future__ import annotations

from pathlib import Path

from tformer.errors import InputError
from tformer.training.metrics import read_metrics


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Training loss per log step and validation loss per evaluation -> run_dir/loss.png."""
    run_dir = Path(run_dir)
    lines = read_metrics(run_dir)
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise InputError("plotting needs matplotlib: pip install 'tformer[plot]'") from error
    train = [(m["step"], m["loss"]) for m in lines if m["kind"] == "train"]
    val = [(m["step"], m["val_loss"]) for m in lines if m["kind"] == "eval"]
    if not train and not val:
        raise InputError(f"{run_dir}: metrics.jsonl holds no loss values yet")
    figure, axes = plt.subplots(figsize=(7, 4))
    for points, label in ((train, "train"), (val, "validation")):
        if points:
            axes.plot(
                *zip(*points, strict=True), label=label, marker="." if label != "train" else None
            )
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(run_dir.name)
    axes.grid(alpha=0.3)
    axes.legend()
    out = Path(out) if out else run_dir / "loss.png"
    figure.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return out
