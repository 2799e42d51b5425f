"""See inside a Transformer: every stage of one forward pass, as tensors or as a report.

>>> from tformer.explainer import capture, explain, save_html
>>> with capture(model) as seen:           # hooks exist only inside the block
...     model(ids)
>>> report = explain(model, tokenizer, "To be, or not to be")
>>> save_html(report, "report.html")        # one self-contained page
>>> changes = compare(tuned, base, tokenizer, "To be")  # what fine-tuning changed
>>> save_html(changes, "compare.html")

Two layers: the data (`capture`, `lens`, `attribution`, `inputs`, `explanation`, which
gathers them into an `Explanation`, and `compare`, which sets two of them side by side) and the renderers in `report/` (HTML page, PNG figures),
which read the data and are never imported by it. docs/explain.md explains how to read each
view of the report.
"""

from tformer.explainer.capture import Capture, LayerRecord, StackRecord, capture
from tformer.explainer.compare import Comparison, compare
from tformer.explainer.explanation import Explanation, explain
from tformer.explainer.report import render_html, save_html, save_png

__all__ = [
    "Capture",
    "Comparison",
    "Explanation",
    "LayerRecord",
    "StackRecord",
    "capture",
    "compare",
    "explain",
    "render_html",
    "save_html",
    "save_png",
]
