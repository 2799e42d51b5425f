"""The views of a compare report (`tformer explain MODEL --compare BASE`), in reading order:
each a function (Comparison, Page) -> HTML.

A summary of what changed most comes first, then the shared tokens, then the differences in
the order a student would check them: the predictions (output), the logit lens (where in the
depth the change appears), the attention heads (which ones changed, and how). The single-model
views' pieces (token tables, probability cells, attention thumbnails and explorer) are reused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape

from torch import Tensor

from tformer.explainer.compare import Comparison, HeadChange
from tformer.explainer.report.page import Page, section, token_table
from tformer.explainer.report.views import (
    attention_grid,
    attention_label,
    explorer,
    model_facts,
    prob_cells,
    tokenisation,
)

SUMMARY_ITEMS = 5  # positions and heads listed in the summary


def _family_label(family: str) -> str:
    stack, kind = family.rsplit("-", 1)
    return attention_label(stack, kind)


def header(c: Comparison, page: Page) -> str:
    ours, theirs = model_facts(c.model.config), model_facts(c.base.config)
    row_class = {True: "", False: ' class="differs"'}  # by "the two models agree"
    rows = "".join(
        f"<tr{row_class[ours[key] == theirs[key]]}>"
        f"<td>{key}</td><td>{escape(ours[key])}</td><td>{escape(theirs[key])}</td></tr>"
        for key in ours
    )
    names = "".join(f"<th>{escape(label)}</th>" for label in c.labels)
    text = f"<tr><td>text</td><td colspan=2>{escape(c.model.text)}</td></tr>"
    if c.model.target is not None:
        text += f"<tr><td>target</td><td colspan=2>{escape(c.model.target)}</td></tr>"
    return (
        "<h1>tformer explain --compare</h1>\n"
        f'<table class="summary"><tr><th></th>{names}</tr>{rows}{text}</table>'
    )


def _position_item(c: Comparison, position: int) -> str:
    """One moved position in words: both top-1 predictions, the KL, the actual token's odds."""
    assert c.kl is not None and c.observed_probs is not None and c.observed is not None
    where = "after" if c.stack == "decoder" else "at"
    tops = []
    for label, ex in zip(c.labels, (c.model, c.base), strict=True):
        assert ex.predictions is not None
        token_id, p = int(ex.predictions.ids[position, 0]), float(ex.predictions.probs[position, 0])
        tops.append(f"{escape(label)} predicts <b>{escape(c.names[token_id])}</b> ({p:.2f})")
    text = (
        f"{where} <b>{escape(c.tokens[position])}</b> (position {position}): {', '.join(tops)}; "
        f"KL {float(c.kl[position]):.3g} nats"
    )
    observed = int(c.observed[position])
    if observed >= 0:
        ours, theirs = c.observed_probs[:, position].tolist()
        text += f"; the actual token <b>{escape(c.names[observed])}</b>: {theirs:.2f} → {ours:.2f}"
    return f"<li>{text}</li>"


def _head_item(change: HeadChange) -> str:
    return (
        f"<li>{_family_label(change.family)}, layer {change.layer}, head {change.head}: "
        f"Jensen-Shannon {change.divergence:.3g} bits</li>"
    )


def _first_lens_difference(c: Comparison) -> str:
    if c.lens_differs is None:
        return ""
    depths = c.lens_differs.any(dim=1).nonzero().flatten().tolist()
    if not depths:
        return "<p>The logit lenses agree at every depth and position.</p>"
    where = "after the embeddings" if depths[0] == 0 else f"after block {depths[0] - 1}"
    count = int(c.lens_differs[-1].sum())
    return (
        f"<p>The logit lenses first disagree {where}; at the output, the top-1 token differs at "
        f"{count} of {len(c.tokens)} positions.</p>"
    )


def summary(c: Comparison, page: Page) -> str:
    parts = []
    if c.kl is not None:
        moved = c.moved_positions(SUMMARY_ITEMS)
        items = "".join(_position_item(c, p) for p in moved)
        parts.append(
            f"<h3>Predictions that moved most</h3><ol class='changes'>{items}</ol>"
            if moved
            else "<p>No prediction moved: both models give the same distributions.</p>"
        )
    parts.append(_first_lens_difference(c))
    heads = c.changed_heads(SUMMARY_ITEMS)
    parts.append(
        f"<h3>Attention heads that changed most</h3><ol class='changes'>"
        f"{''.join(_head_item(h) for h in heads)}</ol>"
        if heads
        else "<p>No attention head changed: every attention map is the same in both models.</p>"
    )
    parts += [f"<p>Not compared: {escape(note)}.</p>" for note in c.notes]
    return section(
        "What changed",
        f"What {escape(c.labels[0])} does differently from {escape(c.labels[1])} on this "
        "text. A prediction's change is the KL divergence between the two next-token "
        "distributions (0 = the same; in nats, larger = more different). An attention head's "
        "change is the Jensen-Shannon divergence between the two models' attention rows, "
        "averaged over the query tokens (0 = the same, 1 bit = they read disjoint tokens).",
        "\n".join(p for p in parts if p),
    )


def _kl_cells(kl: Tensor) -> list[str]:
    scale = float(kl.max()) or 1.0
    return [
        f'<td style="background: rgba(214,39,40,{v / scale:.3f})" title="KL={v:.6g} nats">{v:.2g}</td>'
        for v in kl.tolist()
    ]


def _actual_cells(c: Comparison, row: int) -> list[str]:
    assert c.observed is not None and c.observed_probs is not None
    return [
        "<td>—</td>" if token_id < 0 or math.isnan(p) else f"<td>{p:.2f}</td>"
        for token_id, p in zip(c.observed.tolist(), c.observed_probs[row].tolist(), strict=True)
    ]


def predictions(c: Comparison, page: Page) -> str:
    ours, theirs = c.model.predictions, c.base.predictions
    if c.kl is None or ours is None or theirs is None:
        return ""
    assert c.observed is not None
    actual = [
        "<td>—</td>" if i < 0 else f"<td>{escape(c.names[i])}</td>" for i in c.observed.tolist()
    ]
    rows = [
        ("KL(model ‖ base)", _kl_cells(c.kl)),
        ("actual token", actual),
        *((f"p(actual), {label}", _actual_cells(c, r)) for r, label in enumerate(c.labels)),
    ]
    top_differs = ours.ids[:, 0] != theirs.ids[:, 0]
    for rank in range(ours.ids.shape[1]):
        marked = top_differs if rank == 0 else None
        for label, top in zip(c.labels, (ours, theirs), strict=True):
            cells = prob_cells(top.ids[:, rank], top.probs[:, rank], c.names, marked)
            rows.append((f"{label}: top {rank + 1}", cells))
    return section(
        "Predictions side by side",
        "For each input token: how far the two next-token distributions are apart (KL, darker "
        "red = more), the probability each model gives the token that actually follows, and "
        "both models' most likely tokens, shaded by probability. A red frame marks a position "
        "where the two models' top choice differs.",
        token_table(c.tokens, rows),
    )


def lens(c: Comparison, page: Page) -> str:
    ours, theirs = c.model.lens, c.base.lens
    if c.lens_differs is None or ours is None or theirs is None:
        return ""
    rows = []
    for depth in range(ours.ids.shape[0]):
        where = "embeddings" if depth == 0 else f"after block {depth - 1}"
        for label, top in zip(c.labels, (ours, theirs), strict=True):
            cells = prob_cells(top.ids[depth], top.probs[depth], c.names, c.lens_differs[depth])
            rows.append((f"{where}, {label}", cells))
    return section(
        "Logit lens of both models",
        "The residual stream after each block read through each model's own final norm and "
        "output layer (see the single-model report), two rows per depth. Red frames mark where "
        "the top-1 tokens differ: the first depth with a frame is where fine-tuning's change "
        "starts to show in what the model would predict.",
        token_table(c.tokens, rows),
    )


def _register(
    page: Page, label: str, weights: list[Tensor], rows: list[str], cols: list[str]
) -> int:
    """Add every layer x head map of `weights` (no thumbnails); returns the first map's id."""
    first = len(page.maps)
    for layer, w in enumerate(weights):
        for head in range(w.shape[0]):
            page.add(f"{label}, layer {layer}, head {head}", w[head], rows, cols)
    return first


def _attention_family(c: Comparison, page: Page, family: str) -> str:
    stack, kind = family.rsplit("-", 1)
    rows = c.model.tokens[stack]
    cols = c.model.tokens["encoder" if kind == "cross" else stack]
    label = _family_label(family)
    pairs = [c.attention_maps(family, layer) for layer in range(len(c.attention[family]))]
    panels = [
        _register(page, f"{label} of {name}", [pair[i] for pair in pairs], rows, cols)
        for i, name in enumerate(c.labels)
    ]
    differences = [(ours.float() - theirs.float()).cpu() for ours, theirs in pairs]
    scale = max(float(d.abs().max()) for d in differences)
    table = c.attention[family]
    table_id = page.add(
        f"{label}: Jensen-Shannon divergence (bits)",
        table,
        [f"layer {i}" for i in range(table.shape[0])],
        [f"head {h}" for h in range(table.shape[1])],
    )
    name = f"{label}, {c.labels[0]} − {c.labels[1]}"
    grid = attention_grid(page, family, name, differences, rows, cols, diverging=True, scale=scale)
    entry = page.attention[family]
    entry["panels"] = [*panels, entry["first"]]
    entry["start"] = list(divmod(int(table.argmax()), table.shape[1]))
    return (
        f"<h3>{label}: change per layer and head</h3>"
        f'<canvas class="heatmap labelled" data-map="{table_id}"></canvas>{grid}'
    )


def attention(c: Comparison, page: Page) -> str:
    if not c.attention:
        return ""
    families = [_attention_family(c, page, family) for family in c.attention]
    names = (*c.labels, "difference")
    return section(
        "Attention changes",
        "The table gives each head's change (Jensen-Shannon divergence between the two models' "
        "attention rows, averaged over query tokens; brighter = more changed). The thumbnails "
        f"are the differences {escape(c.labels[0])} − {escape(c.labels[1])} of every head, on "
        "one colour scale: red where the model attends more than the base, blue where less, "
        "white where nothing changed. The enlarged maps show the selected head in both models "
        "and their difference; the most changed head is selected first. Click a thumbnail to "
        "select another.",
        explorer(page, names) + "\n" + "\n".join(families),
    )


def tokens(c: Comparison, page: Page) -> str:
    """The shared tokens (`compare` checked that both models read the same ones)."""
    return tokenisation(c.model, page)


COMPARE_VIEWS: list[Callable[[Comparison, Page], str]] = [
    header,
    summary,
    tokens,
    predictions,
    lens,
    attention,
]
