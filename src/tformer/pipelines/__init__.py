"""Task pipelines over a loaded model and its tokenizer: one module per task.

>>> model, tokenizer = tformer.load("all-MiniLM-L6-v2/")
>>> vectors = embed(model, tokenizer, ["A cat.", "A dog."])   # (2, 384), unit length
"""

from tformer.pipelines.classify import classify
from tformer.pipelines.embed import cosine_similarity, embed
from tformer.pipelines.fill_mask import fill_mask
from tformer.pipelines.ner import Entity, ner
from tformer.pipelines.qa import Answer, answer_question
from tformer.pipelines.translate import translate

__all__ = [
    "Answer",
    "Entity",
    "answer_question",
    "classify",
    "cosine_similarity",
    "embed",
    "fill_mask",
    "ner",
    "translate",
]
