"""The explain report in a real browser: headless Chromium loads it from disk with the network
disabled, runs its script without console errors, draws every heatmap, and screenshots it; the
compare page (two models side by side) too."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import tformer
from tformer.explainer import compare, explain, save_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (Debian: apt-get install -y chromium)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def _chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of a tiny encoder-decoder: every kind of heatmap (self, causal, cross)."""
    directory = tmp_path_factory.mktemp("report")
    corpus = directory / "corpus.txt"
    corpus.write_text("To be, or not to be: that is the question. </script>")
    tokenizer = tformer.Tokenizer.train_char([corpus])
    ids = {k: v for k, v in tokenizer.config_ids().items() if v is not None}
    torch.manual_seed(0)
    model = tformer.build_model(tformer.ModelConfig.preset("tiny-seq2seq", **ids))
    # "</script>" inside the data must not end the page's script early.
    report = explain(model, tokenizer, "To be </script>", target="or not")
    return save_html(report, directory / "report.html")


@pytest.fixture(scope="module")
def compare_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compare page of a tiny decoder and a copy with one block's queries scaled."""
    directory = tmp_path_factory.mktemp("compare")
    corpus = directory / "corpus.txt"
    corpus.write_text("To be, or not to be: that is the question.")
    tokenizer = tformer.Tokenizer.train_char([corpus])
    ids = {k: v for k, v in tokenizer.config_ids().items() if v is not None}
    torch.manual_seed(0)
    base = tformer.build_model(tformer.ModelConfig.preset("tiny-decoder", **ids))
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.decoder.blocks[1].self_attn.q_proj.weight.mul_(5)
    return save_html(compare(tuned, base, tokenizer, "To be, or not"), directory / "compare.html")


@pytest.mark.parametrize("page", ["report", "compare_report"])
def test_report_renders_every_heatmap_without_console_errors(
    page: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    report: Path = request.getfixturevalue(page)
    result = _chromium(
        report,
        tmp_path / "profile",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
    )
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], "the page logged to the console:\n" + "\n".join(console)
    body = re.search(r"<body([^>]*)>", result.stdout)
    assert body is not None, result.stdout[:500]
    attributes = dict(re.findall(r'data-([a-z]+)="([^"]*)"', body.group(1)))
    assert "errors" not in attributes, attributes.get("errors")
    assert attributes.get("status") == "drawn"
    markup = report.read_text().split("<script")[0]  # the script mentions canvases too
    expected = len(re.findall(r"<canvas[^>]*data-map=", markup))
    assert int(attributes["heatmaps"]) == expected > 0


def test_report_screenshot_shows_drawn_heatmaps(report: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    screenshot = tmp_path / "report.png"
    _chromium(report, tmp_path / "profile", "--window-size=1200,1600", f"--screenshot={screenshot}")
    rgb = (torch.from_numpy(imread(screenshot)[..., :3].copy()) * 255).round().long()
    colours = torch.unique(rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2])
    # Text alone gives a few grey levels; drawn heatmaps give hundreds of colours.
    assert len(colours) > 200
