"""The renderers of an `Explanation`: one self-contained HTML page, or single PNG figures.

They read the data (`tformer.explainer.explanation`); the data never imports them, so an
explanation can be computed, inspected and kept without any renderer loaded.

>>> save_html(tformer.explain(model, tokenizer, "To be"), "report.html")
>>> save_png(explanation, "attention:0:1", "head.png")   # needs matplotlib
"""

from tformer.explainer.report.figures import FIGURES, figure, save_png
from tformer.explainer.report.html import render_html, save_html

__all__ = ["FIGURES", "figure", "render_html", "save_html", "save_png"]
