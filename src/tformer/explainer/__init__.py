"""See inside a Transformer: every stage of one forward pass, as tensors or as a report.

>>> from tformer.explainer import capture, explain
>>> with capture(model) as seen:           # hooks exist only inside the block
...     model(ids)
>>> report = explain(model, tokenizer, "To be, or not to be")
>>> report.save_html("report.html")         # one self-contained page

docs/explain.md explains how to read each view of the report.
"""

from tformer.explainer.capture import Capture, LayerRecord, StackRecord, capture
from tformer.explainer.explanation import Explanation, explain

__all__ = ["Capture", "Explanation", "LayerRecord", "StackRecord", "capture", "explain"]
