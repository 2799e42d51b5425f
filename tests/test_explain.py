"""Explain: the capture records what the model really computes (checked against PyTorch's own
attention and hand-written sums), costs nothing outside its block, and the report is one valid,
self-contained page; a trained copy-task model shows the diagonal cross-attention it must learn."""

from __future__ import annotations

import ast
import graphlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import tformer
from tformer.cli import main
from tformer.errors import InputError
from tformer.explainer import capture, explain, render_html, save_png
from tformer.explainer.attribution import attention_rollout
from tformer.modules.mask import build_attention_mask

TEXT = "To be, or not to be: that is the question."
VOID_TAGS = {"meta", "br", "img", "input", "link", "hr", "col", "source", "wbr"}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> tformer.Tokenizer:
    corpus = tmp_path_factory.mktemp("corpus") / "text.txt"
    corpus.write_text(TEXT + "\nWhether 'tis nobler in the mind to suffer.\n")
    return tformer.Tokenizer.train_char([corpus])


def _model(tokenizer: tformer.Tokenizer, preset: str, **overrides: object) -> tformer.TformerModel:
    ids = {k: v for k, v in tokenizer.config_ids().items() if v is not None}
    config = tformer.ModelConfig.preset(preset, **{**ids, **overrides})
    return tformer.build_model(config).eval()


def _ids(model: tformer.TformerModel, *shape: int) -> torch.Tensor:
    return torch.randint(8, model.config.vocab_size, shape)


def _inputs(model: tformer.TformerModel, batch: int = 2) -> dict[str, torch.Tensor]:
    ids = _ids(model, batch, 7)
    if model.config.arch == "encoder-decoder":
        return {"input_ids": ids, "decoder_input_ids": ids[:, :5]}
    return {"input_ids": ids}


VARIANTS = {
    "gpt": ("tiny-decoder", {}),
    "llama-like": (
        "tiny-decoder",
        {"positional": "rotary", "norm": "rmsnorm", "activation": "swiglu", "n_kv_heads": 2},
    ),
    "bert": ("tiny-encoder", {}),
    "seq2seq": ("tiny-seq2seq", {}),
}


@pytest.fixture(params=VARIANTS)
def any_model(request: pytest.FixtureRequest, tokenizer: tformer.Tokenizer) -> tformer.TformerModel:
    """Each family, and a Llama-like decoder (rotary, RMSNorm, SwiGLU, grouped-query heads)."""
    preset, overrides = VARIANTS[request.param]
    return _model(tokenizer, preset, **overrides)


# ---- capture ---------------------------------------------------------------------------------
def test_capture_does_not_change_outputs_and_leaves_no_hooks(
    any_model: tformer.TformerModel,
) -> None:
    model = any_model
    inputs = _inputs(model)
    with torch.no_grad():
        before = model(**inputs).logits
        with capture(model) as seen:
            during = model(**inputs).logits
        after = model(**inputs).logits
    # The capture switches attention to its explicit path: equal up to float rounding.
    torch.testing.assert_close(during, before, atol=1e-5, rtol=1e-5)
    assert torch.equal(after, before)
    assert seen.output.logits is not None and len(seen.stacks) >= 1
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    assert sum(hooks) == 0


def test_capture_removes_hooks_after_an_exception(tokenizer: tformer.Tokenizer) -> None:
    model = _model(tokenizer, "tiny-decoder")
    with pytest.raises(RuntimeError), capture(model):
        raise RuntimeError("interrupted")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _padding(lengths: list[int], total: int) -> torch.Tensor:
    return (torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]).long()


def test_captured_attention_rows_sum_to_one_masked_keys_zero_causal_upper_triangle_zero(
    tokenizer: tformer.Tokenizer,
) -> None:
    model = _model(tokenizer, "tiny-seq2seq")
    source, target = _ids(model, 2, 7), _ids(model, 2, 5)
    source_mask = _padding([7, 4], 7)
    with capture(model) as seen, torch.no_grad():
        model(source, target, attention_mask=source_mask)
    for layer in seen["encoder"].layers:
        weights = layer.self_attention  # (B, H, S, S)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 7))
        assert torch.all(weights[1, :, :, 4:] == 0)  # padded source keys
    future = torch.ones(5, 5, dtype=torch.bool).triu(1)
    for layer in seen["decoder"].layers:
        assert torch.all(layer.self_attention[:, :, future] == 0)
        torch.testing.assert_close(layer.self_attention.sum(-1), torch.ones(2, 4, 5))
        assert layer.cross_attention.shape == (2, 4, 5, 7)
        assert torch.all(layer.cross_attention[1, :, :, 4:] == 0)
        torch.testing.assert_close(layer.cross_attention.sum(-1), torch.ones(2, 4, 5))


@pytest.mark.parametrize("preset", ["tiny-decoder", "tiny-encoder"])
def test_captured_attention_equals_torch_multihead_attention(
    tokenizer: tformer.Tokenizer, preset: str
) -> None:
    """Independent reference: torch.nn.MultiheadAttention with the same weights and inputs."""
    model = _model(tokenizer, preset)
    ids = _ids(model, 2, 6)
    padding = _padding([6, 4], 6)
    with capture(model) as seen, torch.no_grad():
        model(ids, attention_mask=padding)
    stack_name = "decoder" if preset == "tiny-decoder" else "encoder"
    stack = getattr(model, stack_name)
    block, record = stack.blocks[1], seen[stack_name].layers[1]
    x = record.residual["input"]
    query = block.self_attn_norm(x) if block.pre_norm else x
    reference = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    ours = block.self_attn
    with torch.no_grad():
        reference.in_proj_weight.copy_(
            torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
        )
        reference.in_proj_bias.copy_(
            torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias])
        )
        reference.out_proj.load_state_dict(ours.out_proj.state_dict())
        causal = torch.ones(6, 6, dtype=torch.bool).triu(1) if stack.causal else None
        _, expected = reference(
            query,
            query,
            query,
            key_padding_mask=padding == 0,
            attn_mask=causal,
            need_weights=True,
            average_attn_weights=False,
        )
    torch.testing.assert_close(record.self_attention, expected, atol=1e-6, rtol=1e-5)


def test_captured_stages_match_the_model_and_hand_computed_sums(
    tokenizer: tformer.Tokenizer,
) -> None:
    model = _model(tokenizer, "tiny-decoder")  # learned positions, pre-norm, GELU
    ids = _ids(model, 1, 6)
    with capture(model) as seen, torch.no_grad():
        out = model(ids, output_hidden_states=True)
    rec, emb = seen["decoder"], model.decoder.embeddings
    positions = emb.positions.weight[:6]
    torch.testing.assert_close(rec.token_embeddings[0], emb.tokens.weight[ids[0]])
    torch.testing.assert_close(rec.position_encodings[0], positions)
    torch.testing.assert_close(rec.embedding_sum[0], emb.tokens.weight[ids[0]] + positions)
    # The residual stream entering / leaving each block is what the model reports as hidden states.
    for i, layer in enumerate(rec.layers):
        torch.testing.assert_close(layer.residual["input"], out.hidden_states[i])
        torch.testing.assert_close(layer.residual["ffn"], out.hidden_states[i + 1])
        block = model.decoder.blocks[i]
        # pre-norm: stream after attention = stream before + attention output
        attn_out, _ = block.self_attn(
            block.self_attn_norm(layer.residual["input"]),
            mask=build_attention_mask(6, 6, causal=True),
        )
        torch.testing.assert_close(layer.residual["self_attn"], layer.residual["input"] + attn_out)
        up = block.ffn.up
        normed = F.layer_norm(
            layer.residual["self_attn"], (32,), block.ffn_norm.weight, block.ffn_norm.bias
        )
        torch.testing.assert_close(layer.ffn_activation, F.gelu(normed @ up.weight.T + up.bias))
    torch.testing.assert_close(rec.final_norm, out.last_hidden_state)
    assert torch.equal(seen.output.logits, out.logits)


def test_capture_records_post_norm_stream_and_rotary_tables(tokenizer: tformer.Tokenizer) -> None:
    model = _model(tokenizer, "tiny-encoder")  # post-norm: each stage is a norm's output
    ids = _ids(model, 1, 5)
    with capture(model) as seen, torch.no_grad():
        out = model(ids, output_hidden_states=True)
    for i, layer in enumerate(seen["encoder"].layers):
        block, x = model.encoder.blocks[i], layer.residual["input"]
        attn_out, _ = block.self_attn(x, mask=build_attention_mask(5, 5, causal=False))
        norm = block.self_attn_norm
        expected = F.layer_norm(x + attn_out, (32,), norm.weight, norm.bias, norm.eps)
        torch.testing.assert_close(layer.residual["self_attn"], expected)
        torch.testing.assert_close(layer.residual["ffn"], out.hidden_states[i + 1])
    rotary = _model(tokenizer, "tiny-decoder", positional="rotary")
    with capture(rotary) as seen, torch.no_grad():
        rotary(ids)
    rec = seen["decoder"]
    assert torch.all(rec.position_encodings == 0)  # rotary adds nothing to the embeddings
    angles = torch.arange(5)[:, None] * 10000.0 ** (-torch.arange(0, 8, 2) / 8)
    torch.testing.assert_close(rec.rotary_cos[0, :, :4], angles.cos())


# ---- analysis --------------------------------------------------------------------------------
def test_attention_rollout_matches_hand_computation() -> None:
    first = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])  # one head, causal
    second = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    # layer 1: 0.5 A + 0.5 I = [[1, 0], [0.25, 0.75]]; layer 2: identity
    expected = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    torch.testing.assert_close(attention_rollout([first, second]), expected)


def test_decoder_explanation_logit_lens_ends_at_the_model_prediction(
    tokenizer: tformer.Tokenizer,
) -> None:
    model = _model(tokenizer, "tiny-decoder")
    report = explain(model, tokenizer, "To be, or", target=" not")
    ids = torch.tensor([tokenizer.encode("To be, or") + tokenizer.encode(" not")])
    with torch.no_grad():
        logits = model(ids).logits[0]
    assert torch.equal(report.lens.ids[-1], logits.argmax(-1))
    torch.testing.assert_close(report.lens.probs[-1], logits.softmax(-1).max(-1).values)
    assert torch.equal(report.predictions.ids[:, 0], logits.argmax(-1))
    # Attributions explain " not" (positions 8..11 predict it): the last token cannot influence it.
    for values in report.attributions.values():
        assert values.shape == (ids.shape[1],)
        assert values[-1].abs() < 1e-6 and values[:-1].abs().sum() > 0


def test_encoder_neighbours_are_ranked_by_cosine_similarity(tokenizer: tformer.Tokenizer) -> None:
    model = _model(tokenizer, "tiny-encoder", head="embedding")
    sentences = ["the question", "To be, or not", "suffer"]
    report = explain(model, tokenizer, "To be, or not", sentences=sentences)
    with torch.no_grad():
        vectors = [model(torch.tensor([tokenizer.encode(s)])).embeddings[0] for s in sentences]
        text = model(torch.tensor([tokenizer.encode("To be, or not")])).embeddings[0]
    expected = sorted(
        (
            (s, F.cosine_similarity(text, v, dim=0).item())
            for s, v in zip(sentences, vectors, strict=True)
        ),
        key=lambda pair: -pair[1],
    )
    assert [s for s, _ in report.neighbours] == [s for s, _ in expected]
    assert report.neighbours[0] == pytest.approx(("To be, or not", 1.0))
    assert set(report.attributions) == {"gradient × input", "attention rollout"}


# ---- HTML report -----------------------------------------------------------------------------
class _StrictParser(HTMLParser):
    """Fails on a closing tag that does not match the open one, or tags left open."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.attributes: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes.append((tag, dict(attrs)))
        if tag not in VOID_TAGS:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()


def test_html_report_is_valid_self_contained_with_one_heatmap_per_layer_and_head(
    tokenizer: tformer.Tokenizer, any_model: tformer.TformerModel
) -> None:
    model = any_model
    page = render_html(explain(model, tokenizer, "To be, or not"))
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://", page), "the report must not reference the network"
    parser = _StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.open == []
    assert not any(key in ("src", "href") for _, attrs in parser.attributes for key in attrs), (
        "no external resources"
    )
    config = model.config
    expected = {"decoder-self": config.decoder_layers} if config.arch == "decoder" else {}
    if config.arch != "decoder":
        expected["encoder-self"] = config.encoder_layers
    if config.arch == "encoder-decoder":
        expected |= {"decoder-self": config.decoder_layers, "decoder-cross": config.decoder_layers}
    thumbnails = [
        attrs
        for tag, attrs in parser.attributes
        if tag == "canvas" and "attention" in (attrs.get("class") or "")
    ]
    for family, n_layers in expected.items():
        cells = {
            (a["data-layer"], a["data-head"]) for a in thumbnails if a["data-family"] == family
        }
        assert cells == {(str(i), str(h)) for i in range(n_layers) for h in range(config.n_heads)}
    assert len(thumbnails) == sum(expected.values()) * config.n_heads
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert data is not None
    maps = json.loads(data.group(1))["maps"]
    assert all(int(a["data-map"]) < len(maps) for a in thumbnails)


def test_figure_mistakes_are_user_errors(tmp_path: Path, tokenizer: tformer.Tokenizer) -> None:
    """A wrong figure name, a layer or head out of range, or a figure the model has not got is
    the user's mistake (one `tformer: error:` line), not a bug."""
    report = explain(_model(tokenizer, "tiny-decoder"), tokenizer, "To be")
    for name in ("nonsense", "attention:9:0", "attention:0:x", "cross-attention"):
        with pytest.raises(InputError):
            save_png(report, name, tmp_path / "figure.png")
    assert not (tmp_path / "figure.png").exists()


# ---- layering --------------------------------------------------------------------------------
EXPLAINER = Path(tformer.__file__).parent / "explainer"


def _explainer_import_graph() -> dict[str, set[str]]:
    """tformer.explainer module -> the tformer.explainer modules it imports anywhere in its
    source, function-level imports included (read with `ast`, so nothing is executed)."""
    paths = {}
    for path in EXPLAINER.rglob("*.py"):
        parts = path.relative_to(EXPLAINER.parent).with_suffix("").parts
        paths[".".join(("tformer", *parts)).removesuffix(".__init__")] = path
    graph = {}
    for name, path in paths.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0 and node.module, f"{name}: relative import"
                for alias in node.names:  # `from package import module` names a module
                    child = f"{node.module}.{alias.name}"
                    targets.add(child if child in paths else node.module)
        graph[name] = {target for target in targets if target in paths and target != name}
    return graph


def test_explainer_imports_point_one_way_data_never_imports_renderers() -> None:
    graph = _explainer_import_graph()
    renderers = {name for name in graph if name.startswith("tformer.explainer.report")}
    assert "tformer.explainer.explanation" in graph["tformer.explainer.report.html"]
    for name in graph.keys() - renderers - {"tformer.explainer"}:  # the package re-exports both
        assert not graph[name] & renderers, f"{name} imports a renderer"
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle


# ---- copy task -------------------------------------------------------------------------------
def test_copy_task_model_learns_diagonal_cross_attention(tmp_path: Path) -> None:
    """A seq2seq model trained to copy must read source token t when writing output token t."""
    corpus = tmp_path / "letters.txt"
    corpus.write_text("abcdefghijklmnop")
    tokenizer = tformer.Tokenizer.train_char([corpus])
    model = _model(tokenizer, "tiny-seq2seq", n_layers=1, n_heads=1)
    first, length = tokenizer.encode("a")[0], 8
    text = "hdkapbgm"

    def diagonal_mass() -> tuple[float, float]:
        cross = explain(model, tokenizer, text, target=text).attention("decoder", "cross")[0][0]
        rows = cross[:length]  # row t writes output token t; the last row predicts the end
        hits = (rows.argmax(-1) == torch.arange(length)).float().mean().item()
        return hits, rows.diagonal().mean().item()

    assert diagonal_mass()[1] < 0.5  # not diagonal by construction
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        source = torch.randint(first, tokenizer.vocab_size, (64, length))
        shifted = torch.cat([torch.full((64, 1), model.config.bos_id), source[:, :-1]], dim=1)
        return source, shifted

    for _ in range(400):
        source, shifted = batch()
        loss = model(source, shifted, labels=source).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    source, shifted = batch()
    with torch.no_grad():
        accuracy = (model(source, shifted).logits.argmax(-1) == source).float().mean()
    assert accuracy > 0.95  # it copies
    hits, mass = diagonal_mass()
    assert hits == 1.0 and mass > 0.8


# ---- command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tokenizer: tformer.Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "gpt"
    return _model(tokenizer, "tiny-decoder").save_pretrained(path, tokenizer)


def test_cli_writes_report_and_png(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    png = tmp_path / "attn.png"
    args = ["explain", str(checkpoint), "--text", "To be", "--out", str(out)]
    assert main([*args, "--png", f"attention:1:2={png}", "--png", "lens"]) == 0
    assert "<canvas" in out.read_text()
    for path in (png, tmp_path / "report-lens.png"):
        assert path.read_bytes().startswith(b"\x89PNG")


def test_cli_reports_unknown_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-model"
    assert main(["explain", str(missing), "--text", "hello"]) == 2
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "   "])
def test_cli_rejects_empty_text(
    checkpoint: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", str(checkpoint), "--text", text]) == 2
    assert "--text is empty" in capsys.readouterr().err


def test_cli_rejects_bad_figure_names(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    for figure in ("nonsense", "attention:9:0", "cross-attention"):
        assert (
            main(["explain", str(checkpoint), "--text", "To", "--out", str(out), "--png", figure])
            == 2
        )


def test_model_without_tokenizer_reads_text_as_token_ids(tokenizer: tformer.Tokenizer) -> None:
    model = _model(tokenizer, "tiny-seq2seq")
    report = explain(model, None, "5 6 7", target="7 6")
    assert report.capture["encoder"].input_ids.tolist() == [[5, 6, 7]]
    assert report.capture["decoder"].input_ids.tolist() == [[model.config.bos_id, 7, 6]]
    with pytest.raises(InputError, match="token ids"):
        explain(model, None, "5 six 7")


def test_gradient_x_input_equals_finite_difference_of_scaling_each_token(
    tokenizer: tformer.Tokenizer,
) -> None:
    """grad . x is the derivative of the score when token j's embedding is scaled by (1 + a)."""
    model = _model(tokenizer, "tiny-decoder").double()
    report = explain(model, tokenizer, "To be", target=", or")
    prompt, target = tokenizer.encode("To be"), tokenizer.encode(", or")
    ids = torch.tensor([prompt + target])
    rows = torch.arange(len(prompt) - 1, ids.shape[1] - 1)  # the positions predicting the target

    def score(position: int, scale: float) -> float:
        def rescale(module: nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
            output = output.clone()
            output[:, position] *= scale
            return output

        handle = model.decoder.embeddings.tokens.register_forward_hook(rescale)
        with torch.no_grad():
            log_probs = model(ids).logits[0].log_softmax(-1)
        handle.remove()
        return log_probs[rows, torch.tensor(target)].sum().item()

    eps = 1e-4
    expected = [(score(j, 1 + eps) - score(j, 1 - eps)) / (2 * eps) for j in range(ids.shape[1])]
    got = report.attributions["gradient × input"]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype), atol=1e-4, rtol=1e-3)


def test_explain_leaves_the_model_as_it_found_it(tokenizer: tformer.Tokenizer) -> None:
    model = _model(tokenizer, "tiny-decoder").train()
    explain(model, tokenizer, "To be", target=", or")
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_span_model_explains_its_predicted_start_and_end(tokenizer: tformer.Tokenizer) -> None:
    """A question-answering head is explained at its argmax start and end: the rollout reads
    those positions, the attributions sum the two log-probabilities' gradients."""
    model = _model(tokenizer, "tiny-encoder", head="question-answering")
    report = explain(model, tokenizer, "To be, or not")
    ids = torch.tensor([tokenizer.encode("To be, or not")])
    with torch.no_grad():
        start, end = model(ids).logits[0].argmax(-1).tolist()  # (2, T) -> one of each
    expected = attention_rollout(report.attention("encoder"))[[start, end]].mean(dim=0)
    torch.testing.assert_close(report.attributions["attention rollout"], expected)
    assert report.attributions["gradient × input"].abs().sum() > 0
    assert report.explained == "the predicted answer's start and end"
