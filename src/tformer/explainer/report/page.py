"""The building blocks of a report page: the heatmap registry and small HTML pieces.

Tables and coloured tokens are static HTML; heatmaps are <canvas> elements that `report.js`
draws from the page's JSON block, which `Page` collects. Every view (`views.py`) writes its
HTML with these pieces, and `html.py` puts the views and the JSON block into one page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import TypedDict

from torch import Tensor

DECIMALS = 4  # heatmap values are rounded to keep the page small


class _HeatMapOptions(TypedDict, total=False):  # optional keys (Python 3.10 has no NotRequired)
    scale: float  # a fixed colour range (0..scale, or -scale..scale if diverging)


class HeatMap(_HeatMapOptions):
    """One matrix for `report.js`: values (rows, cols) and optional axis labels."""

    title: str
    rows: list[str] | None
    cols: list[str] | None
    data: list[list[float]]
    diverging: bool  # a blue-white-red scale centred on 0 instead of viridis


class _FamilyOptions(TypedDict, total=False):
    panels: list[int]  # the first map of each block shown side by side (model, base, difference)
    start: list[int]  # the (layer, head) shown first


class AttentionFamily(_FamilyOptions):
    """The attention explorer's index of one family's maps: layers x heads from `first` on.
    A comparison's family also has `panels` and `start` (see `_FamilyOptions`)."""

    label: str
    layers: int
    heads: int
    first: int


@dataclass
class Page:
    """The heatmaps a page draws: `maps` for the script, `attention` families for the explorer."""

    maps: list[HeatMap] = field(default_factory=list)
    attention: dict[str, AttentionFamily] = field(default_factory=dict)

    def add(
        self,
        title: str,
        data: Tensor,
        rows: list[str] | None = None,
        cols: list[str] | None = None,
        *,
        diverging: bool = False,
        scale: float | None = None,
    ) -> int:
        """Register a (rows, cols) matrix; returns its id for a <canvas data-map>. Without
        `scale` the colours span the map's own range."""
        values = data.detach().float().cpu().round(decimals=DECIMALS).tolist()
        heatmap: HeatMap = {
            "title": title,
            "rows": rows,
            "cols": cols,
            "data": values,
            "diverging": diverging,
        }
        if scale is not None and scale > 0:
            heatmap["scale"] = scale
        self.maps.append(heatmap)
        return len(self.maps) - 1


def canvas(map_id: int, css: str = "labelled", **data: object) -> str:
    """The <canvas> that `report.js` fills with heatmap `map_id`; `data` become data-* attributes."""
    attrs = "".join(f' data-{key}="{escape(str(value))}"' for key, value in data.items())
    return f'<canvas class="heatmap {css}" data-map="{map_id}"{attrs}></canvas>'


def section(title: str, help_text: str, content: str) -> str:
    """One view: a heading, the help text that says how to read it, and its content."""
    return f'<section>\n<h2>{escape(title)}</h2>\n<p class="help">{help_text}</p>\n{content}\n</section>'


def chip(text: str, note: str = "", style: str = "", title: str = "") -> str:
    """One token as a box, with an optional small note under it (its id) and a hover title."""
    small = f"<small>{escape(note)}</small>" if note else ""
    style_attr = f' style="{style}"' if style else ""
    title_attr = f' title="{escape(title)}"' if title else ""
    return f'<span class="tok"{style_attr}{title_attr}>{escape(text)}{small}</span>'


def token_table(tokens: list[str], rows: list[tuple[str, list[str]]]) -> str:
    """A table with one column per token and one row per (label, cells)."""
    head = "".join(f"<th>{escape(t)}</th>" for t in tokens)
    body = "".join(f"<tr><th>{escape(label)}</th>{''.join(cells)}</tr>" for label, cells in rows)
    return f'<div class="scroll"><table><tr><th></th>{head}</tr>{body}</table></div>'
