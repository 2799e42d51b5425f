"""`explain(model, tokenizer, text)`: every stage of one forward pass, ready to look at."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tformer.config import ModelConfig
from tformer.explainer.attribution import attention_rollout, cross_rollout, gradient_x_input
from tformer.explainer.capture import Capture, capture
from tformer.explainer.inputs import (
    Plan,
    encode_text,
    fill_labels,
    id_tokenizer,
    plan_decoder,
    plan_encoder,
    plan_seq2seq,
    pooled_embeddings,
    score,
)
from tformer.explainer.lens import LogitLens, TopK, logit_lens, top_k, vocabulary_head
from tformer.models import ModelOutput, TformerModel
from tformer.models.stack import TransformerStack
from tformer.tokenizer import Tokenizer

POSITION_PLOT_LEN = 64  # positions shown in the positional-encoding plot


@dataclass
class Explanation:
    """One input's trip through a model. Tensors are for batch row 0 unless noted.

    tokens: stack name -> the displayed tokens of that stack's input.
    capture: every recorded stage (batch of one), see `tformer.explainer.capture`.
    stack: the stack whose positions predict tokens ("decoder"; "encoder" for BERT).
    predictions: top-k next tokens (or masked-token fillers) per position of `stack`.
    lens: top-1 token after the embeddings and after each block of `stack` (logit lens).
    attributions: method -> (T,) relevance of each token of `attribution_stack`'s input to
        the prediction described by `explained` ("gradient x input", "attention rollout").
    neighbours: (sentence, cosine similarity) of the pooled embedding, most similar first.
    position_table: the positional encodings of the first positions (n, d_model), or the
        rotary cosines (n, head_dim); None without positional information.
    names: token id -> display string, for every id in predictions and lens.
    """

    config: ModelConfig
    text: str
    target: str | None
    tokens: dict[str, list[str]]
    capture: Capture
    stack: str
    explained: str
    attribution_stack: str
    predictions: TopK | None = None
    lens: LogitLens | None = None
    attributions: dict[str, Tensor] = field(default_factory=dict)
    neighbours: list[tuple[str, float]] = field(default_factory=list)
    position_table: Tensor | None = None
    names: dict[int, str] = field(default_factory=dict)

    def attention(self, stack: str, kind: str = "self") -> list[Tensor]:
        """Per-layer attention weights (H, T, T_key) of `stack`; kind "self" or "cross"."""
        record = self.capture.stacks.get(stack)
        layers = record.layers if record is not None else []
        weights = [r.self_attention if kind == "self" else r.cross_attention for r in layers]
        return [w[0] for w in weights if w is not None]


def display_token(text: str) -> str:
    """Make whitespace visible: a token that is a space or newline must not look empty."""
    return text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "∅"


class TokenNames:
    """Token id -> display string, remembering every id it was asked about."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.seen: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        if token_id not in self.seen:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self.seen[token_id] = display_token(text)
        return self.seen[token_id]


def explain(
    model: TformerModel,
    tokenizer: Tokenizer | None,
    text: str,
    target: str | None = None,
    *,
    sentences: Sequence[str] = (),
    k: int = 5,
) -> Explanation:
    """Run `model` once on `text` (and `target`) and collect everything a report shows.

    Decoders: `target` continues the text; without it the next token is explained.
    Encoder-decoders: `text` is the source, `target` the translation (greedy if None).
    Encoders: `sentences` are compared with the text by pooled embedding.
    Without a tokenizer, `text` and `target` are token ids separated by spaces ("5 3 9").
    """
    config = model.config
    if tokenizer is None:  # a model saved without one (synthetic tasks): text is token ids
        tokenizer = id_tokenizer(config.vocab_size, f"{text} {target or ''}")
    was_training = model.training
    model.eval()  # no dropout: explain the deterministic forward pass
    try:
        return _explain(model, tokenizer, text, target, sentences, k)
    finally:
        model.train(was_training)


def _explain(
    model: TformerModel,
    tokenizer: Tokenizer,
    text: str,
    target: str | None,
    sentences: Sequence[str],
    k: int,
) -> Explanation:
    config = model.config
    device = next(model.parameters()).device
    plan = _plan(model, tokenizer, text, target, device)
    with capture(model) as seen, torch.no_grad():
        output = model(**plan.kwargs)
    fill_labels(plan, output.logits)
    names = TokenNames(tokenizer)
    result = Explanation(
        config=config,
        text=text,
        target=target,
        tokens={n: [names(int(i)) for i in r.input_ids[0]] for n, r in seen.stacks.items()},
        capture=seen,
        stack=plan.stack,
        explained=plan.what,
        attribution_stack="encoder" if config.arch == "encoder-decoder" else plan.stack,
    )
    _add_predictions(result, model, output, names, k)
    nearest = _add_neighbours(result, model, tokenizer, sentences, device)
    _add_attributions(result, model, plan, nearest)
    result.position_table = position_table(getattr(model, plan.stack), POSITION_PLOT_LEN)
    return result


def _plan(
    model: TformerModel,
    tokenizer: Tokenizer,
    text: str,
    target: str | None,
    device: torch.device,
) -> Plan:
    ids = encode_text(tokenizer, text)
    target_ids = None
    if target is not None:
        encode_text(tokenizer, target, "target")  # refuses an empty target
        target_ids = tokenizer.encode(target, add_special_tokens=False)
    config = model.config
    if config.arch == "decoder":
        return plan_decoder(ids, target_ids or [], device)
    if config.arch == "encoder":
        return plan_encoder(ids, config.mask_id, config.task_head, device)
    return plan_seq2seq(model, ids, target_ids, device)


def _add_predictions(
    result: Explanation, model: TformerModel, output: ModelOutput, names: TokenNames, k: int
) -> None:
    head = vocabulary_head(model)
    if output.logits is None or output.logits.dim() != 3 or head is None:
        return
    result.predictions = top_k(output.logits[0], k)
    stack: TransformerStack = getattr(model, result.stack)
    result.lens = logit_lens(result.capture[result.stack], stack.final_norm, head)
    for token_id in torch.cat((result.predictions.ids.flatten(), result.lens.ids.flatten())):
        names(int(token_id))
    result.names = dict(names.seen)


def _add_neighbours(
    result: Explanation,
    model: TformerModel,
    tokenizer: Tokenizer,
    sentences: Sequence[str],
    device: torch.device,
) -> Tensor | None:
    """Rank `sentences` by cosine similarity to the text; return the nearest one's embedding."""
    if result.config.arch != "encoder" or not sentences:
        return None
    embeddings = pooled_embeddings(model, tokenizer, [result.text, *sentences], device)
    similarity = (embeddings[1:] @ embeddings[0]).tolist()
    order = sorted(range(len(sentences)), key=lambda i: -similarity[i])
    result.neighbours = [(sentences[i], similarity[i]) for i in order]
    return embeddings[1 + order[0]]


def _add_attributions(
    result: Explanation, model: TformerModel, plan: Plan, nearest: Tensor | None
) -> None:
    if plan.labels or nearest is not None:
        grads = gradient_x_input(model, lambda: score(plan, model(**plan.kwargs), nearest))
        result.attributions["gradient × input"] = grads[result.attribution_stack]
    self_attention = result.attention(result.attribution_stack)
    # a span head's rows are its start and end logits; the positions it reads are its labels
    spans = result.config.task_head == "question-answering"
    rows = torch.tensor(plan.labels if spans else plan.rows or _summary_rows(result))
    if result.config.arch == "encoder-decoder":
        rollout = cross_rollout(self_attention, result.attention("decoder", "cross"), rows)
    else:
        rollout = attention_rollout(self_attention)[rows].mean(dim=0)
    result.attributions["attention rollout"] = rollout


def _summary_rows(result: Explanation) -> list[int]:
    """Positions a whole-sequence output reads: [CLS] for CLS pooling, else every token."""
    config = result.config
    if config.task_head == "sequence-classification" and config.pooling == "cls":
        return [0]
    return list(range(len(result.tokens[result.attribution_stack])))


def position_table(stack: TransformerStack, length: int) -> Tensor | None:
    """The encodings of positions 0..length-1 as the model adds them, (n, d_model), or the
    rotary cosines (n, head_dim) for rotary models; None when positions carry no signal."""
    positions = stack.embeddings.positions
    n = min(length, stack.config.max_seq_len)
    device = stack.embeddings.tokens.weight.device
    position_ids = torch.arange(n, device=device)[None]  # (1, n)
    with torch.no_grad():
        rotation = positions.rotation(position_ids)
        if rotation is not None:
            return rotation[0][0, 0].float()  # cos, (n, head_dim)
        zeros = torch.zeros(1, n, stack.config.d_model, device=device)
        table = positions.add(zeros, position_ids)[0].float()
    return table if table.abs().sum() > 0 else None
