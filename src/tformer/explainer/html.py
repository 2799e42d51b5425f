"""An `Explanation` as one self-contained HTML page.

Tables and coloured tokens are static HTML written here; heatmaps are <canvas> elements drawn
by `report.js` from a JSON block in the page. Script, style and data are all inline, so the
file opens from disk with no network and can be mailed or archived as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from tformer.explainer.explanation import Explanation

DECIMALS = 4  # heatmap values are rounded to keep the page small


@dataclass
class Page:
    """The heatmaps a page draws: `maps` for the script, `attention` families for the explorer."""

    maps: list[dict[str, Any]] = field(default_factory=list)
    attention: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(
        self,
        title: str,
        data: Tensor,
        rows: list[str] | None = None,
        cols: list[str] | None = None,
        *,
        diverging: bool = False,
    ) -> int:
        """Register a (rows, cols) matrix; returns its id for a <canvas data-map>."""
        values = data.detach().float().cpu().round(decimals=DECIMALS).tolist()
        self.maps.append(
            {"title": title, "rows": rows, "cols": cols, "data": values, "diverging": diverging}
        )
        return len(self.maps) - 1


def canvas(map_id: int, css: str = "labelled", **data: object) -> str:
    attrs = "".join(f' data-{key}="{escape(str(value))}"' for key, value in data.items())
    return f'<canvas class="heatmap {css}" data-map="{map_id}"{attrs}></canvas>'


def asset(name: str) -> str:
    return resources.files("tformer.explainer").joinpath(name).read_text(encoding="utf-8")


def render(explanation: Explanation) -> str:
    """The whole page."""
    from tformer.explainer import sections

    page = Page()
    body = "\n".join(section(explanation, page) for section in sections.ALL)
    data = json.dumps({"maps": page.maps, "attention": page.attention}, ensure_ascii=False)
    data = data.replace("<", "\\u003c")  # a token "</script>" or "<!--" must not end the block
    title = escape(f"tformer explain: {explanation.text[:60]}")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
        f"<style>\n{asset('report.css')}</style>\n</head>\n<body>\n{body}\n"
        f'<script type="application/json" id="report-data">{data}</script>\n'
        f"<script>\n{asset('report.js')}</script>\n</body>\n</html>\n"
    )
