"""The views of an explain report, in reading order: each a function (Explanation, Page) -> HTML.

The order follows the data through the model: tokens -> embeddings and positions -> attention
in every block -> the residual stream and feed-forward layers -> predictions -> attributions.
Views that do not apply to a model (a logit lens for a sentence encoder) return "".
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

import torch
from torch import Tensor

from tformer.config import ModelConfig
from tformer.explainer.capture import StackRecord, residual_norms
from tformer.explainer.explanation import Explanation
from tformer.explainer.report.page import Page, canvas, chip, section, token_table

STACK_TITLES = {"encoder": "Encoder", "decoder": "Decoder"}
DETAIL_WIDTH = 840  # pixels of heatmap cells in the enlarged attention map
PAGE_WIDTH = 1100  # pixels of content (report.css: 1200 minus padding), shared by panels


def model_facts(c: ModelConfig) -> dict[str, str]:
    """The architecture in a few lines (family, sizes, heads, positions, norm, activation)."""
    return {
        "architecture": c.arch,
        "layers": f"{c.encoder_layers} encoder + {c.decoder_layers} decoder"
        if c.arch == "encoder-decoder"
        else str(c.n_layers),
        "width": f"d_model={c.d_model}, d_ff={c.d_ff}",
        "heads": f"{c.n_heads} query / {c.kv_heads} key-value, head_dim={c.attention_head_dim}",
        "positions": c.positional,
        "norm": f"{c.norm}, {c.norm_position}-norm",
        "activation": c.activation,
    }


def header(ex: Explanation, page: Page) -> str:
    facts = {**model_facts(ex.config), "text": ex.text}
    if ex.target is not None:
        facts["target"] = ex.target
    facts["explained"] = ex.explained
    rows = "".join(f"<tr><td>{k}</td><td>{escape(v)}</td></tr>" for k, v in facts.items())
    return f'<h1>tformer explain</h1>\n<table class="summary">{rows}</table>'


def tokenisation(ex: Explanation, page: Page) -> str:
    parts = []
    for stack, tokens in ex.tokens.items():
        ids = ex.capture[stack].input_ids[0].tolist()
        chips = "".join(
            chip(t, str(i), title=f"position {p}, id {i}")
            for p, (t, i) in enumerate(zip(tokens, ids, strict=True))
        )
        parts.append(f'<h3>{STACK_TITLES[stack]} input</h3><div class="tokens">{chips}</div>')
    return section(
        "Tokenisation",
        "The text as the model reads it: one box per token, with its id. ␣ is a space, ⏎ a "
        "newline. Every later view has one row or column per token shown here.",
        "\n".join(parts),
    )


def _embedding_rows(record: StackRecord) -> list[tuple[str, list[str]]]:
    """Vector length of each part of the embedding sum, one cell per token."""
    parts = {
        "‖token‖": record.token_embeddings,
        "‖segment‖": record.segment_embeddings,
        "‖position‖": record.position_encodings,
        "‖token + position‖": record.embedding_sum,
        "‖stream start‖": record.embedded,
    }
    return [
        (name, [f"<td>{value:.2f}</td>" for value in part[0].norm(dim=-1).tolist()])
        for name, part in parts.items()
        if part is not None
    ]


def embeddings(ex: Explanation, page: Page) -> str:
    tables = "".join(
        f"<h3>{STACK_TITLES[stack]}</h3>" + token_table(tokens, _embedding_rows(ex.capture[stack]))
        for stack, tokens in ex.tokens.items()
    )
    plot = ""
    if ex.position_table is not None:
        rotary = ex.config.positional == "rotary"
        title = (
            "rotary cosines cos(position × θ_i)" if rotary else f"{ex.config.positional} encodings"
        )
        n = ex.position_table.shape[0]
        labels = [str(p) if p % 8 == 0 else "" for p in range(n)]  # every 8th stays legible
        map_id = page.add(title, ex.position_table, labels, None, diverging=True)
        plot = (
            f"<h3>Positional encodings: {escape(title)}</h3>{canvas(map_id, 'labelled positions')}"
        )
    return section(
        "Embeddings and positions",
        "Each token id is looked up in the embedding matrix; position information is added "
        "(sinusoidal or learned) or applied inside attention (rotary). The table gives vector "
        "lengths per token; the plot shows the encoding of each position (rows) in each "
        "dimension (columns, blue negative, red positive).",
        tables + plot,
    )


def attention_grid(
    page: Page,
    key: str,
    label: str,
    weights: list[Tensor],
    rows: list[str],
    cols: list[str],
    *,
    diverging: bool = False,
    scale: float | None = None,
) -> str:
    """One clickable thumbnail per layer and head of `weights` (each (H, T, T_key)), registered
    as the explorer's family `key`. Diverging maps (differences) share `scale`, so thumbnails
    compare: a head that barely changed stays white."""
    n_heads = weights[0].shape[0]
    first = len(page.maps)
    size = 96 if len(weights) * n_heads <= 64 else 48  # thumbnail side in pixels
    cells = []
    for layer, w in enumerate(weights):
        cells.append(f'<span class="label">layer {layer}</span>')
        for head in range(n_heads):
            title = f"{label}, layer {layer}, head {head}"
            map_id = page.add(title, w[head], rows, cols, diverging=diverging, scale=scale)
            cells.append(canvas(map_id, "attention", family=key, layer=layer, head=head, size=size))
    page.attention[key] = {"label": label, "layers": len(weights), "heads": n_heads, "first": first}
    style = f"grid-template-columns: auto repeat({n_heads}, auto)"
    return f'<h3>{label}</h3><div class="grid" style="{style}">{"".join(cells)}</div>'


def attention_label(stack: str, kind: str) -> str:
    return f"{STACK_TITLES[stack]} {'cross' if kind == 'cross' else 'self'}-attention"


def _attention_family(ex: Explanation, page: Page, stack: str, kind: str) -> str:
    weights = ex.attention(stack, kind)
    if not weights:
        return ""
    cols = ex.tokens["encoder" if kind == "cross" else stack]
    label = attention_label(stack, kind)
    return attention_grid(page, f"{stack}-{kind}", label, weights, ex.tokens[stack], cols)


def explorer(page: Page, panels: tuple[str, ...] = ("",)) -> str:
    """The layer/head pickers over the page's attention families and one enlarged map per
    panel (a family with `panels` in its index shows one of its blocks of maps in each);
    several panels share the width of one, so they stand side by side."""
    options = "".join(
        f'<option value="{k}">{escape(v["label"])}</option>' for k, v in page.attention.items()
    )
    room = DETAIL_WIDTH if len(panels) == 1 else PAGE_WIDTH // len(panels) - 60  # - labels
    details = "".join(
        f'<div><div class="detail-caption">{escape(name)}</div>'
        f'<canvas class="detail" data-room="{room}"></canvas></div>'
        for name in panels
    )
    return (
        '<div class="controls"><select id="family">' + options + '</select><select id="layer">'
        f'</select><select id="head"></select></div><div class="explorer">{details}</div>'
    )


def attention(ex: Explanation, page: Page) -> str:
    families = [
        _attention_family(ex, page, stack, kind)
        for stack in ex.tokens
        for kind in ("self", "cross")
    ]
    return section(
        "Attention",
        "Row i shows how query token i spreads its attention over the key tokens (columns); "
        "each row sums to 1. Causal (decoder) self-attention is zero above the diagonal. Click "
        "a thumbnail, or choose a layer and head, to enlarge it with token labels.",
        explorer(page) + "\n" + "\n".join(f for f in families if f),
    )


def alignment(ex: Explanation, page: Page) -> str:
    cross = ex.attention("decoder", "cross")
    if not cross:
        return ""
    outputs = [*ex.tokens["decoder"][1:], "(next)"]
    maps = []
    for layer, w in enumerate(cross):
        map_id = page.add(
            f"cross-attention, layer {layer}, mean of heads",
            w.float().mean(dim=0),
            outputs,
            ex.tokens["encoder"],
        )
        maps.append(f"<div><small>layer {layer}</small><br>{canvas(map_id)}</div>")
    return section(
        "Cross-attention alignment",
        "Which source tokens (columns) each output token (rows: the token predicted at that "
        "step) reads, averaged over heads. For translation it resembles a word alignment; for "
        "a copy task it is the diagonal.",
        f'<div class="explorer">{"".join(maps)}</div>',
    )


def residual_stream(ex: Explanation, page: Page) -> str:
    record = ex.capture[ex.stack]
    labels, norms = residual_norms(record)
    ffn = [
        layer.ffn_activation[0].float().pow(2).mean(dim=-1).sqrt()
        for layer in record.layers
        if layer.ffn_activation is not None
    ]
    tokens = ex.tokens[ex.stack]
    # log10: norms grow with depth and a few "sink" tokens are orders of magnitude larger.
    stream_id = page.add(
        "log10 residual-stream norm", norms.clamp_min(1e-6).log10(), labels, tokens
    )
    ffn_id = page.add(
        "log10 feed-forward activation RMS",
        torch.stack(ffn).clamp_min(1e-6).log10(),
        [f"layer {i}" for i in range(len(ffn))],
        tokens,
    )
    return section(
        "Residual stream and feed-forward layers",
        "Left: the length (log10) of each token's vector in the residual stream, entering the "
        "first block and after each sub-layer (self_attn, cross_attn, ffn) of each block. "
        "Right: the root-mean-square activation (log10) of each block's feed-forward hidden "
        "layer per token — where the MLPs fire. Hover a map for its value range.",
        f'<div class="explorer"><div>{canvas(stream_id)}</div><div>{canvas(ffn_id)}</div></div>',
    )


def prob_cells(
    ids: Tensor, probs: Tensor, names: dict[int, str], marked: Tensor | None = None
) -> list[str]:
    """One cell per position: the token and its probability, shaded by the probability;
    cells where `marked` (T,) is True get a red frame (where two models disagree)."""
    flags = marked.tolist() if marked is not None else [False] * len(ids)
    frame = {True: ' class="marked"', False: ""}
    return [
        f'<td{frame[flag]} style="background: rgba(33,145,140,{p:.3f})" title="p={p:.4f}">'
        f"{escape(names[i])}<br><small>{p:.2f}</small></td>"
        for i, p, flag in zip(ids.tolist(), probs.tolist(), flags, strict=True)
    ]


def predictions(ex: Explanation, page: Page) -> str:
    if ex.predictions is None or ex.lens is None:
        return ""
    tokens = ex.tokens[ex.stack]
    top = ex.predictions
    ranks = [
        (f"top {r + 1}", prob_cells(top.ids[:, r], top.probs[:, r], ex.names))
        for r in range(top.ids.shape[1])
    ]
    depths = [
        (
            "embeddings" if depth == 0 else f"after block {depth - 1}",
            prob_cells(ex.lens.ids[depth], ex.lens.probs[depth], ex.names),
        )
        for depth in range(ex.lens.ids.shape[0])
    ]
    return section(
        "Predictions and logit lens",
        "Top: the model's most likely next tokens after each input token (for a masked LM: the "
        "most likely token at that position), shaded by probability. Bottom (logit lens): the "
        "residual stream after each block read through the final norm and output layer, as if "
        "the model ended there — watch the final prediction form with depth.",
        token_table(tokens, ranks) + "<h3>Logit lens</h3>" + token_table(tokens, depths),
    )


def _attribution_style(value: float, scale: float, signed: bool) -> str:
    alpha = abs(value) / scale if scale > 0 else 0.0
    colour = "214,39,40" if value >= 0 or not signed else "31,119,180"
    return f"background: rgba({colour},{alpha:.3f})"


def attributions(ex: Explanation, page: Page) -> str:
    tokens = ex.tokens[ex.attribution_stack]
    rows = []
    for method, values in ex.attributions.items():
        signed = bool((values < 0).any())
        scale = float(values.abs().max())
        chips = "".join(
            chip(
                t,
                title=f"{method}: {float(v):.4f}",
                style=_attribution_style(float(v), scale, signed),
            )
            for t, v in zip(tokens, values.tolist(), strict=True)
        )
        rows.append(f'<h3>{escape(method)}</h3><div class="tokens attr">{chips}</div>')
    return section(
        f"Token attributions for {ex.explained}",
        "How much each input token contributes to the explained prediction. Gradient × input: "
        "red tokens push the prediction up, blue ones down (first-order estimate). Attention "
        "rollout: how much of each token's information reaches the predicting positions through "
        "the attention layers (darker = more). Hover a token for its value.",
        "\n".join(rows),
    )


def neighbours(ex: Explanation, page: Page) -> str:
    if not ex.neighbours:
        return ""
    rows = "".join(
        f"<tr><td>{sim:.3f}</td><td>{escape(sentence)}</td></tr>" for sentence, sim in ex.neighbours
    )
    return section(
        "Nearest sentences by pooled embedding",
        "Cosine similarity between the text's pooled (mean, L2-normalised) embedding and each "
        "given sentence, most similar first.",
        f"<table><tr><th>cosine</th><th>sentence</th></tr>{rows}</table>",
    )


VIEWS: list[Callable[[Explanation, Page], str]] = [
    header,
    tokenisation,
    embeddings,
    attention,
    alignment,
    residual_stream,
    predictions,
    attributions,
    neighbours,
]
