"""`compare(model, base, tokenizer, text)`: what fine-tuning changed, on one text.

Both models are explained on the same tokens (`explain`), then three differences are computed
once and kept as plain tensors:

* predictions: per position, the KL divergence KL(model || base) between the two next-token
  distributions (in nats) and both models' probability of the token that actually follows;
* the logit lens: where the two models' top-1 token differs, per depth and position;
* attention: per layer and head, the Jensen-Shannon divergence (in bits, 0 = same row,
  1 = disjoint rows) between the two models' attention rows, averaged over query positions.

The models must read the same vocabulary and be of the same family (decoder, encoder or
encoder-decoder); otherwise the comparison is meaningless and `InputError` says why.
Predictions are compared for any two such models; the logit lens only when both have the
same number of layers, and a family of attention maps only when both have the same number
of layers and heads (a distilled or pruned model still gets its predictions compared;
`notes` says what was skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from tformer.errors import InputError
from tformer.explainer.explanation import Explanation, explain
from tformer.models import TformerModel
from tformer.tokenizer import Tokenizer

UNCHANGED = 1e-9  # divergences below this count as "no change": float rounding gives ~1e-14
ATTENTION_KINDS = ("self", "cross")


def kl_divergence(logits: Tensor, base_logits: Tensor) -> Tensor:
    """KL(P || Q) in nats per row, P = softmax(logits), Q = softmax(base_logits); (T, V) -> (T,).

    Direction: how surprised the base would be by the fine-tuned model's predictions -- large
    where fine-tuning made the model confident of something the base found unlikely."""
    log_p = logits.float().log_softmax(dim=-1)
    log_q = base_logits.float().log_softmax(dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).clamp_min(0)


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence in bits between the distributions in the last dimension of
    `p` and `q` (rows summing to 1): symmetric, 0 for equal rows, 1 for disjoint ones, and
    defined where a row has zeros (masked keys), unlike KL."""
    p, q = p.double(), q.double()
    m = (p + q) / 2
    half = (torch.xlogy(p, p) - torch.xlogy(p, m) + torch.xlogy(q, q) - torch.xlogy(q, m)) / 2
    return (half.sum(dim=-1) / torch.log(torch.tensor(2.0, dtype=torch.float64))).clamp_min(0)


@dataclass
class HeadChange:
    """One attention head's change: family ("decoder-self"), layer, head, mean JS in bits."""

    family: str
    layer: int
    head: int
    divergence: float


@dataclass
class Comparison:
    """Two models' explanations of one text, and what differs between them.

    model, base: the explanations (same tokens); labels: how the page names the two models.
    kl: (T,) KL(model || base) of the next-token (or masked-token) distributions per position
        of the predicting stack, nats; None without a vocabulary head.
    observed: (T,) id of the token each position predicts in the text (the next input token
        of a decoder, the input token itself for a masked LM), -1 where there is none.
    observed_probs: (2, T) probability of `observed` under model (row 0) and base (row 1);
        NaN where there is none.
    lens_differs: (n_layers + 1, T) True where the two logit lenses' top-1 tokens differ;
        None when the depths differ or there is no vocabulary head.
    attention: family ("decoder-self", "decoder-cross", "encoder-self") -> (L, H) mean
        Jensen-Shannon divergence (bits) between the models' attention rows.
    names: token id -> display string, for both models' predictions and lenses.
    notes: what was not compared, and why.
    """

    model: Explanation
    base: Explanation
    labels: tuple[str, str]
    kl: Tensor | None = None
    observed: Tensor | None = None
    observed_probs: Tensor | None = None
    lens_differs: Tensor | None = None
    attention: dict[str, Tensor] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def stack(self) -> str:
        """The stack whose positions make the predictions ("decoder", or "encoder")."""
        return self.model.stack

    @property
    def tokens(self) -> list[str]:
        return self.model.tokens[self.stack]

    def moved_positions(self, n: int = 5) -> list[int]:
        """The (at most n) positions whose prediction moved most (largest KL), above rounding."""
        if self.kl is None:
            return []
        order = self.kl.argsort(descending=True, stable=True).tolist()
        return [p for p in order if self.kl[p] > UNCHANGED][:n]

    def changed_heads(self, n: int = 5) -> list[HeadChange]:
        """The (at most n) heads whose attention changed most, over every family, above rounding."""
        heads = [
            HeadChange(family, layer, head, float(value))
            for family, table in self.attention.items()
            for (layer, head), value in zip(
                torch.cartesian_prod(*(torch.arange(s) for s in table.shape)).tolist(),
                table.flatten().tolist(),
                strict=True,
            )
        ]
        heads.sort(key=lambda h: -h.divergence)
        return [h for h in heads if h.divergence > UNCHANGED][:n]

    def attention_maps(self, family: str, layer: int) -> tuple[Tensor, Tensor]:
        """Both models' attention weights (H, T, T_key) of `family` at `layer`: model, base."""
        stack, kind = family.rsplit("-", 1)
        return self.model.attention(stack, kind)[layer], self.base.attention(stack, kind)[layer]


def compare(
    model: TformerModel,
    base: TformerModel,
    tokenizer: Tokenizer | None,
    text: str,
    target: str | None = None,
    *,
    base_tokenizer: Tokenizer | None = None,
    labels: tuple[str, str] = ("model", "base"),
    k: int = 5,
) -> Comparison:
    """Explain `model` and `base` on the same `text` (and `target`) and compute what differs.

    `base_tokenizer`, if given, must have the same vocabulary as `tokenizer` (ids are compared,
    and a model saved without a tokenizer can borrow the base's: pass it as `tokenizer`).
    Encoder-decoders need `target`: each model's own greedy translation would give the two
    decoders different tokens to compare.
    """
    check_comparable(model, base, tokenizer, base_tokenizer)
    if model.config.arch == "encoder-decoder" and target is None:
        raise InputError(
            "comparing encoder-decoders needs a target (--target), so both decoders read the "
            "same tokens; each model's greedy translation would differ"
        )
    ours = explain(model, tokenizer, text, target, k=k)
    theirs = explain(base, tokenizer, text, target, k=k)
    for stack, tokens in ours.tokens.items():
        if theirs.tokens.get(stack) != tokens:  # same vocabulary, so only a tokenizer's bug
            raise InputError(f"the two models read different {stack} tokens for this text")
    result = Comparison(ours, theirs, labels, names={**theirs.names, **ours.names})
    _compare_predictions(result)
    _compare_lens(result)
    _compare_attention(result)
    return result


def check_comparable(
    model: TformerModel,
    base: TformerModel,
    tokenizer: Tokenizer | None,
    base_tokenizer: Tokenizer | None,
) -> None:
    """Refuse two models whose comparison would be meaningless: other families or vocabularies."""
    a, b = model.config, base.config
    if a.arch != b.arch:
        raise InputError(
            f"cannot compare a model of arch {a.arch!r} with a base of arch {b.arch!r}; "
            "compare a fine-tuned model with the base it was fine-tuned from"
        )
    if a.vocab_size != b.vocab_size:
        raise InputError(
            f"the models have different vocabularies (vocab_size {a.vocab_size} vs "
            f"{b.vocab_size}), so their predictions cannot be compared token by token"
        )
    if tokenizer is None or base_tokenizer is None:
        return
    ours = tokenizer.backend.get_vocab(with_added_tokens=True)
    theirs = base_tokenizer.backend.get_vocab(with_added_tokens=True)
    differing = sorted(t for t in ours.keys() | theirs.keys() if ours.get(t) != theirs.get(t))
    if differing:
        example = differing[0]
        raise InputError(
            f"the two tokenizers differ in {len(differing)} token(s) (e.g. {example!r}: id "
            f"{ours.get(example)} vs {theirs.get(example)}); compare models that share the "
            "base's tokenizer"
        )


def observed_tokens(input_ids: Tensor, stack: str, mask_id: int | None) -> Tensor:
    """(T,) the token each position predicts in the text, -1 where the text has none: a
    decoder's next input token (none after the last), a masked LM's own input token (none at
    [MASK], whose true token the text does not say)."""
    if stack == "decoder":
        return torch.cat((input_ids[1:], input_ids.new_full((1,), -1)))
    return input_ids.masked_fill(input_ids == mask_id, -1) if mask_id is not None else input_ids


def _logits(ex: Explanation) -> Tensor:
    output = ex.capture.output
    assert output is not None and output.logits is not None  # predictions imply logits
    return output.logits[0].float().cpu()


def _compare_predictions(result: Comparison) -> None:
    if result.model.predictions is None or result.base.predictions is None:
        result.notes.append("predictions not compared: the models have no vocabulary head")
        return
    logits, base_logits = _logits(result.model), _logits(result.base)
    result.kl = kl_divergence(logits, base_logits)
    input_ids = result.model.capture[result.stack].input_ids[0].cpu()
    observed = observed_tokens(input_ids, result.stack, result.model.config.mask_id)
    rows = torch.stack((logits.softmax(-1), base_logits.softmax(-1)))  # (2, T, V)
    probs = rows.gather(-1, observed.clamp_min(0).expand(2, -1)[..., None])[..., 0]
    result.observed = observed
    for position, token_id in enumerate(input_ids.tolist()):  # the actual tokens get names too
        result.names.setdefault(token_id, result.tokens[position])
    result.observed_probs = probs.masked_fill(observed < 0, float("nan"))


def _compare_lens(result: Comparison) -> None:
    ours, theirs = result.model.lens, result.base.lens
    if ours is None or theirs is None:
        return
    if ours.ids.shape != theirs.ids.shape:
        result.notes.append(
            f"logit lens not compared: {ours.ids.shape[0] - 1} vs {theirs.ids.shape[0] - 1} layers"
        )
        return
    result.lens_differs = ours.ids.cpu() != theirs.ids.cpu()


def _compare_attention(result: Comparison) -> None:
    for stack in result.model.tokens:
        for kind in ATTENTION_KINDS:
            ours, theirs = result.model.attention(stack, kind), result.base.attention(stack, kind)
            if not ours:
                continue
            family = f"{stack}-{kind}"
            shapes = [w.shape for w in ours], [w.shape for w in theirs]
            if shapes[0] != shapes[1]:
                result.notes.append(
                    f"{family} attention not compared: {len(ours)} layers x {ours[0].shape[0]} "
                    f"heads vs {len(theirs)} x {theirs[0].shape[0] if theirs else 0}"
                )
                continue
            result.attention[family] = torch.stack(
                [
                    js_divergence(a.cpu(), b.cpu()).mean(dim=-1)
                    for a, b in zip(ours, theirs, strict=True)
                ]
            ).float()  # (L, H): mean over query rows
