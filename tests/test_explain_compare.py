"""Explain --compare: a model compared with itself changes nothing anywhere; a copy with one
head's queries altered changes exactly that head (earlier layers and the other heads stay
exactly equal) and the predictions after the first token; the divergences match hand
computation; models that cannot be compared are user errors; the CLI writes the page."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import torch

import tformer
from test_explain import VARIANTS, _StrictParser
from tformer.adapters import LoraConfig, add_lora
from tformer.cli import main
from tformer.errors import InputError
from tformer.explainer import compare, render_html
from tformer.explainer.compare import js_divergence, kl_divergence

CORPUS = "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer.\n"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> tformer.Tokenizer:
    corpus = tmp_path_factory.mktemp("corpus") / "text.txt"
    corpus.write_text(CORPUS)
    return tformer.Tokenizer.train_char([corpus])


def _model(tokenizer: tformer.Tokenizer, preset: str, **overrides: object) -> tformer.TformerModel:
    ids = {k: v for k, v in tokenizer.config_ids().items() if v is not None}
    config = tformer.ModelConfig.preset(preset, **{**ids, **overrides})
    return tformer.build_model(config).eval()


def _altered_head(model: tformer.TformerModel, layer: int, head: int) -> tformer.TformerModel:
    """A copy of `model` whose `head` in block `layer` has new query weights: only that head's
    attention pattern can change in that block."""
    tuned = copy.deepcopy(model)
    attention = tuned.decoder.blocks[layer].self_attn
    width = tuned.config.attention_head_dim
    with torch.no_grad():
        rows = attention.q_proj.weight[head * width : (head + 1) * width]
        rows.copy_(torch.randn_like(rows) * 3)
    return tuned


def test_divergences_match_hand_computation() -> None:
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]])
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8]])
    # JS(p, q) = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2, in bits
    first = (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25) + math.log2(1 / 0.75)) / 2
    torch.testing.assert_close(js_divergence(p, q), torch.tensor([first, 1.0, 0.0]).double())
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 2.0]])  # softmax [0.25, 0.75]
    base = torch.tensor([[0.0, 0.0], [1.0, 2.0]])  # softmax [0.5, 0.5]
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    torch.testing.assert_close(kl_divergence(logits, base), torch.tensor([expected, 0.0]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_compared_with_itself_shows_zero_change_everywhere(
    tokenizer: tformer.Tokenizer, variant: str
) -> None:
    preset, overrides = VARIANTS[variant]
    model = _model(tokenizer, preset, **overrides)
    target = "or not" if model.config.arch == "encoder-decoder" else None
    result = compare(model, model, tokenizer, "To be, or", target)
    assert result.attention and all(
        torch.equal(t, torch.zeros_like(t)) for t in result.attention.values()
    )
    assert result.changed_heads() == [] and result.moved_positions() == []
    if result.kl is not None:  # every family here has a vocabulary head
        assert torch.equal(result.kl, torch.zeros_like(result.kl))
        assert not result.lens_differs.any()
        ours, theirs = result.observed_probs
        assert torch.equal(ours.isnan(), theirs.isnan())
        assert torch.equal(ours.nan_to_num(), theirs.nan_to_num())
    page = render_html(result)
    assert "No prediction moved" in page and "No attention head changed" in page


def test_altering_one_heads_queries_changes_that_head_only_and_the_predictions_after_it(
    tokenizer: tformer.Tokenizer,
) -> None:
    base = _model(tokenizer, "tiny-decoder", n_layers=3)
    tuned = _altered_head(base, layer=1, head=2)
    result = compare(tuned, base, tokenizer, "To be, or not", labels=("tuned", "base"))
    change = result.attention["decoder-self"]  # (layers, heads)
    assert change.shape == (3, base.config.n_heads)
    assert torch.equal(change[0], torch.zeros_like(change[0]))  # before the altered block
    assert change[1, 2] > 0.01
    others = [h for h in range(base.config.n_heads) if h != 2]
    assert torch.equal(change[1, others], torch.zeros(len(others)))  # same q, k, v: same rows
    assert (change[2] > 0).all()  # later blocks read the changed stream
    top = result.changed_heads(1)[0]
    assert (top.family, top.layer, top.head) == ("decoder-self", 1, 2)
    ours, theirs = result.attention_maps("decoder-self", 1)
    assert not torch.equal(ours[2], theirs[2]) and torch.equal(ours[others], theirs[others])
    # Position 0 of a causal model attends to itself only, whatever the queries: unchanged.
    assert result.kl[0] == 0 and (result.kl[1:] > 0).all()
    assert 0 not in result.moved_positions(len(result.tokens))
    assert not result.lens_differs[:2].any()  # the embeddings and block 0 are the same
    page = render_html(result)
    assert "Decoder self-attention, layer 1, head 2: Jensen-Shannon" in page
    assert '"start": [1, 2]' in page  # the enlarged view opens on the changed head


def test_lora_adapters_on_the_last_block_change_only_that_block_and_what_follows(
    tokenizer: tformer.Tokenizer,
) -> None:
    """The main use: a model with (trained) adapters against its base, compared in memory."""
    base = _model(tokenizer, "tiny-decoder")
    tuned = copy.deepcopy(base)
    adapters = add_lora(tuned, LoraConfig(targets=r"decoder\.blocks\.1\.self_attn\.q_proj"))
    with torch.no_grad():
        for adapter in adapters.values():
            adapter.B.normal_(std=1.0)  # as if trained: B starts at zero (no change)
    result = compare(tuned, base, tokenizer, "To be, or not")
    change = result.attention["decoder-self"]
    assert torch.equal(change[0], torch.zeros_like(change[0])) and (change[1] > 0).all()
    assert not result.lens_differs[:2].any() and result.moved_positions()


def test_observed_probabilities_are_each_models_probability_of_the_next_token(
    tokenizer: tformer.Tokenizer,
) -> None:
    base = _model(tokenizer, "tiny-decoder")
    tuned = _altered_head(base, layer=0, head=1)
    result = compare(tuned, base, tokenizer, "To be", target=", or")
    ids = torch.tensor([tokenizer.encode("To be") + tokenizer.encode(", or")])
    assert result.observed.tolist() == [*ids[0, 1:].tolist(), -1]
    for row, model in enumerate((tuned, base)):
        with torch.no_grad():
            probs = model(ids).logits[0].softmax(-1)
        expected = probs[torch.arange(ids.shape[1] - 1), ids[0, 1:]]
        torch.testing.assert_close(result.observed_probs[row, :-1], expected)
        assert result.observed_probs[row, -1].isnan()
    assert result.names[int(ids[0, 1])] == result.tokens[1]  # the actual tokens have names


def test_different_layer_counts_compare_predictions_only(tokenizer: tformer.Tokenizer) -> None:
    result = compare(
        _model(tokenizer, "tiny-decoder", n_layers=3),
        _model(tokenizer, "tiny-decoder"),
        tokenizer,
        "To be",
    )
    assert result.kl is not None and (result.kl > 0).all()
    assert result.attention == {} and result.lens_differs is None
    assert any("3 vs 2 layers" in note for note in result.notes)
    assert "Not compared: logit lens" in render_html(result)


def test_models_that_cannot_be_compared_are_user_errors(
    tokenizer: tformer.Tokenizer, tmp_path: Path
) -> None:
    decoder = _model(tokenizer, "tiny-decoder")
    with pytest.raises(InputError, match="arch 'decoder' with a base of arch 'encoder'"):
        compare(decoder, _model(tokenizer, "tiny-encoder"), tokenizer, "To be")
    with pytest.raises(InputError, match="vocab_size"):
        compare(decoder, _model(tokenizer, "tiny-decoder", vocab_size=80), tokenizer, "To be")
    corpus = tmp_path / "other.txt"  # as many characters, other ids: same size, other vocabulary
    corpus.write_text("".join(chr(ord(c) + 1000) for c in CORPUS))
    other = tformer.Tokenizer.train_char([corpus])
    assert other.vocab_size == tokenizer.vocab_size
    with pytest.raises(InputError, match="tokenizers differ"):
        compare(decoder, decoder, tokenizer, "To be", base_tokenizer=other)
    seq2seq = _model(tokenizer, "tiny-seq2seq")
    with pytest.raises(InputError, match="--target"):
        compare(seq2seq, seq2seq, tokenizer, "To be")


def test_compare_page_is_valid_and_self_contained_with_three_panels(
    tokenizer: tformer.Tokenizer,
) -> None:
    base = _model(tokenizer, "tiny-seq2seq")
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.decoder.blocks[0].cross_attn.k_proj.weight.mul_(4)
    page = render_html(compare(tuned, base, tokenizer, "To be", "or not"))
    assert not re.search(r"https?://", page)
    parser = _StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.open == []
    assert [a.get("class") for t, a in parser.attributes if t == "canvas"].count("detail") == 3
    families = {a["data-family"] for t, a in parser.attributes if "data-family" in a}
    assert families == {"encoder-self", "decoder-self", "decoder-cross"}
    assert "Decoder cross-attention, layer 0" in page.split("Attention heads that changed most")[1]


# ---- command line ----------------------------------------------------------------------------
def test_cli_writes_compare_report_and_refuses_mismatched_models(
    tokenizer: tformer.Tokenizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _model(tokenizer, "tiny-decoder")
    base_path = base.save_pretrained(tmp_path / "base", tokenizer)
    tuned_path = _altered_head(base, 1, 0).save_pretrained(tmp_path / "tuned", tokenizer)
    out = tmp_path / "compare.html"
    args = ["explain", str(tuned_path), "--compare", str(base_path), "--text", "To be"]
    assert main([*args, "--out", str(out)]) == 0
    page = out.read_text()
    assert "tformer explain --compare" in page and "Attention heads that changed most" in page
    assert main([*args, "--png", "lens"]) == 2
    assert "leave them out with --compare" in capsys.readouterr().err
    wide = _model(tokenizer, "tiny-decoder", vocab_size=80).save_pretrained(tmp_path / "wide")
    assert main(["explain", str(tuned_path), "--compare", str(wide), "--text", "To be"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("tformer: error:")
    assert f"vocab_size {tokenizer.vocab_size} vs 80" in error
