"""Single report figures as PNG files, drawn with matplotlib (the optional `plot` extra).

Figure names (`--png NAME`):
  positions                    positional encodings (or rotary cosines) by position
  attention[:LAYER[:HEAD]]     self-attention of the predicting stack (default layer 0, head 0)
  encoder-attention[:L[:H]]    encoder self-attention of an encoder-decoder
  cross-attention[:L[:H]]      decoder cross-attention of an encoder-decoder
  residual                     residual-stream norm per token after each sub-layer
  lens                         logit lens: top-1 probability per depth and token
  attributions                 token attributions, one bar chart per method
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from tformer.errors import InputError
from tformer.explainer.capture import residual_norms
from tformer.explainer.explanation import Explanation

if TYPE_CHECKING:  # matplotlib is optional: only needed when a figure is drawn
    from matplotlib.figure import Figure

FIGURES = (
    "positions",
    "attention",
    "encoder-attention",
    "cross-attention",
    "residual",
    "lens",
    "attributions",
)


def figure_name(name: str) -> tuple[str, list[str]]:
    """Split "attention:1:2" into ("attention", ["1", "2"]), refusing names not in FIGURES.
    The CLI calls this before loading a model, so a typo fails at once."""
    base, *spec = name.split(":")
    if base not in FIGURES:
        raise InputError(f"unknown figure {name!r}; choose one of {', '.join(FIGURES)}")
    return base, spec


def _pyplot() -> ModuleType:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never needs a display
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise InputError(
            "PNG export needs matplotlib; install it with: pip install 'tformer[plot]'"
        ) from error
    return plt


def _attention_args(ex: Explanation, name: str, spec: list[str]) -> tuple[str, str, int, int]:
    stack, kind = {
        "attention": (ex.stack, "self"),
        "encoder-attention": ("encoder", "self"),
        "cross-attention": ("decoder", "cross"),
    }[name]
    weights = ex.attention(stack, kind)
    if not weights:
        raise InputError(f"figure {name!r} does not exist for a {ex.config.arch} model")
    try:
        layer, head = (int(spec[0]) if spec else 0), (int(spec[1]) if len(spec) > 1 else 0)
    except ValueError as error:
        raise InputError(f"{name}:LAYER:HEAD takes integers, got {':'.join(spec)!r}") from error
    n_layers, n_heads = len(weights), weights[0].shape[0]
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise InputError(
            f"{name}:{layer}:{head} is out of range: layers 0..{n_layers - 1}, "
            f"heads 0..{n_heads - 1}"
        )
    return stack, kind, layer, head


def _heatmap(
    plt: ModuleType, data: torch.Tensor, rows: list[str], cols: list[str], title: str
) -> Figure:
    height, width = data.shape
    fig, ax = plt.subplots(figsize=(min(2 + 0.3 * width, 16), min(1.5 + 0.3 * height, 16)))
    image = ax.imshow(data.float().cpu().numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    return fig


def figure(ex: Explanation, name: str) -> Figure:
    """The matplotlib Figure called `name` (see the module docstring)."""
    base, spec = figure_name(name)
    plt = _pyplot()
    if base.endswith("attention"):
        stack, kind, layer, head = _attention_args(ex, base, spec)
        keys = ex.tokens["encoder" if kind == "cross" else stack]
        weights = ex.attention(stack, kind)[layer][head]
        return _heatmap(plt, weights, ex.tokens[stack], keys, f"{base}, layer {layer}, head {head}")
    if base == "positions":
        return _positions(plt, ex)
    if base == "residual":
        return _residual(plt, ex)
    if base == "lens":
        return _lens(plt, ex)
    return _attributions(plt, ex)


def _positions(plt: ModuleType, ex: Explanation) -> Figure:
    if ex.position_table is None:
        raise InputError(f"positional={ex.config.positional!r} adds no encodings to plot")
    fig, ax = plt.subplots(figsize=(8, 5))
    image = ax.imshow(
        ex.position_table.cpu().numpy(), cmap="RdBu_r", aspect="auto", vmin=-1, vmax=1
    )
    ax.set_xlabel("dimension")
    ax.set_ylabel("position")
    ax.set_title(f"{ex.config.positional} positional encodings")
    fig.colorbar(image, ax=ax)
    return fig


def _residual(plt: ModuleType, ex: Explanation) -> Figure:
    labels, norms = residual_norms(ex.capture[ex.stack])
    log_norms = norms.clamp_min(1e-6).log10()
    return _heatmap(plt, log_norms, labels, ex.tokens[ex.stack], "log10 residual-stream norm")


def _lens(plt: ModuleType, ex: Explanation) -> Figure:
    if ex.lens is None:
        raise InputError("the logit lens needs a model with a vocabulary head")
    depths = ["embeddings"] + [f"block {i}" for i in range(ex.lens.ids.shape[0] - 1)]
    fig = _heatmap(plt, ex.lens.probs, depths, ex.tokens[ex.stack], "logit lens (top-1 prob)")
    ax = fig.axes[0]
    for row, ids in enumerate(ex.lens.ids.tolist()):
        for col, token_id in enumerate(ids):
            ax.text(col, row, ex.names[token_id], ha="center", va="center", fontsize=7, color="w")
    return fig


def _attributions(plt: ModuleType, ex: Explanation) -> Figure:
    tokens = ex.tokens[ex.attribution_stack]
    methods = list(ex.attributions.items())
    fig, axes = plt.subplots(
        len(methods),
        1,
        figsize=(min(2 + 0.35 * len(tokens), 16), 2.5 * len(methods)),
        squeeze=False,
    )
    for ax, (method, values) in zip(axes[:, 0], methods, strict=True):
        data = values.float().cpu().numpy()
        ax.bar(range(len(tokens)), data, color=["tab:red" if v >= 0 else "tab:blue" for v in data])
        ax.set_xticks(range(len(tokens)), tokens, fontsize=8)
        ax.set_title(f"{method} for {ex.explained}")
    fig.tight_layout()
    return fig


def save_png(ex: Explanation, name: str, path: str | Path) -> Path:
    """Draw figure `name` (see the module docstring) and write it to `path` as a PNG."""
    path = Path(path)
    fig = figure(ex, name)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path
