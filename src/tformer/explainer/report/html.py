"""An `Explanation` (or a `Comparison` of two models) as one self-contained HTML page.

The views (`views.py`) write the static HTML and register their heatmaps; this module adds the
heatmaps as a JSON block and inlines the script and style. Nothing is fetched, so the file
opens from disk with no network and can be mailed or archived as it is.
"""

from __future__ import annotations

import json
from html import escape
from importlib import resources
from pathlib import Path

from tformer.explainer.compare import Comparison
from tformer.explainer.explanation import Explanation
from tformer.explainer.report.compare_views import COMPARE_VIEWS
from tformer.explainer.report.page import Page
from tformer.explainer.report.views import VIEWS


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def render_html(report: Explanation | Comparison) -> str:
    """The whole page: every view in reading order, its heatmap data, script and style. A
    `Comparison` gets the compare page (`compare_views.py`), an `Explanation` the report of
    one model."""
    page = Page()
    if isinstance(report, Comparison):
        body = "\n".join(view(report, page) for view in COMPARE_VIEWS)
        title = f"tformer explain --compare: {report.model.text[:60]}"
    else:
        body = "\n".join(view(report, page) for view in VIEWS)
        title = f"tformer explain: {report.text[:60]}"
    data = json.dumps({"maps": page.maps, "attention": page.attention}, ensure_ascii=False)
    data = data.replace("<", "\\u003c")  # a token "</script>" or "<!--" must not end the block
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f"<style>\n{_asset('report.css')}</style>\n</head>\n<body>\n{body}\n"
        f'<script type="application/json" id="report-data">{data}</script>\n'
        f"<script>\n{_asset('report.js')}</script>\n</body>\n</html>\n"
    )


def save_html(report: Explanation | Comparison, path: str | Path) -> Path:
    """Write the page of `report` (one model's, or a comparison's) to `path` (UTF-8)."""
    path = Path(path)
    path.write_text(render_html(report), encoding="utf-8")
    return path
