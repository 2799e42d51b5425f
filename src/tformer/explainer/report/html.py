"""An `Explanation` as one self-contained HTML page.

The views (`views.py`) write the static HTML and register their heatmaps; this module adds the
heatmaps as a JSON block and inlines the script and style. Nothing is fetched, so the file
opens from disk with no network and can be mailed or archived as it is.
"""

from __future__ import annotations

import json
from html import escape
from importlib import resources
from pathlib import Path

from tformer.explainer.explanation import Explanation
from tformer.explainer.report.page import Page
from tformer.explainer.report.views import VIEWS


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def render_html(explanation: Explanation) -> str:
    """The whole page: every view in reading order, its heatmap data, script and style."""
    page = Page()
    body = "\n".join(view(explanation, page) for view in VIEWS)
    data = json.dumps({"maps": page.maps, "attention": page.attention}, ensure_ascii=False)
    data = data.replace("<", "\\u003c")  # a token "</script>" or "<!--" must not end the block
    title = escape(f"tformer explain: {explanation.text[:60]}")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
        f"<style>\n{_asset('report.css')}</style>\n</head>\n<body>\n{body}\n"
        f'<script type="application/json" id="report-data">{data}</script>\n'
        f"<script>\n{_asset('report.js')}</script>\n</body>\n</html>\n"
    )


def save_html(explanation: Explanation, path: str | Path) -> Path:
    """Write the page of `explanation` to `path` (UTF-8) and return the path."""
    path = Path(path)
    path.write_text(render_html(explanation), encoding="utf-8")
    return path
