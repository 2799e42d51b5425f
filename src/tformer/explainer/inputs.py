"""Turn (text, target) into one model call and the prediction to explain, per architecture.

A `Plan` says how to run the model on the text and which scalar "score" the attributions
explain: the summed log-probability of the predicted (or given target) tokens at `rows`, the
predicted class, or the similarity to the nearest neighbour sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer as Backend
from tokenizers import models, pre_tokenizers
from torch import Tensor
from torch.nn import functional as F

from tformer.errors import ConfigError, InputError
from tformer.generation import generate
from tformer.models import ModelOutput, TformerModel
from tformer.models.heads import sentence_embedding
from tformer.tokenizer import Tokenizer

MAX_GENERATED = 64  # greedy target length cap for encoder-decoders given no --target


@dataclass
class Plan:
    """How to run the model and what to explain.

    kwargs: the model call. stack: the stack whose positions make the predictions.
    rows: positions of `stack` whose predictions are scored; labels: the token (or class) id
    scored at each row, filled from the model's own argmax when not given.
    """

    kwargs: dict[str, Tensor]
    stack: str
    rows: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    what: str = ""  # the explained prediction, in words


def encode_text(tokenizer: Tokenizer, text: str, what: str = "text") -> list[int]:
    """Token ids of `text`, refusing empty input with a message that says how to fix it."""
    if not text.strip():
        raise InputError(f"the {what} to explain is empty; pass some text, e.g. --text 'Hello'")
    ids = tokenizer.encode(text)
    pad = tokenizer.token_id("pad")
    while ids and ids[-1] == pad:  # one unbatched text: a tokenizer's fixed-length padding is noise
        ids.pop()
    if not ids:
        raise InputError(f"the {what} {text!r} encodes to no tokens with this tokenizer")
    return ids


def id_tokenizer(vocab_size: int, text: str) -> Tokenizer:
    """Reads "5 3 9" as the token ids 5, 3, 9: lets models trained without a tokenizer
    (synthetic tasks such as copying) be explained. `text` is checked to be such ids."""
    for part in text.split():
        if not part.isdigit() or int(part) >= vocab_size:
            raise InputError(
                f"this model was saved without a tokenizer, so the text must be token ids in "
                f"[0, {vocab_size}) separated by spaces, e.g. '3 4 5'; got {part!r}"
            )
    vocab = {str(i): i for i in range(vocab_size)}
    backend = Backend(models.WordLevel(vocab, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return Tokenizer(backend, {})


def plan_decoder(ids: list[int], target_ids: list[int], device: torch.device) -> Plan:
    """GPT: run prompt + target; explain the target's tokens, or the next token after the prompt."""
    full = torch.tensor([ids + target_ids], device=device)
    if target_ids:
        rows = list(range(len(ids) - 1, len(ids) + len(target_ids) - 1))
        return Plan({"input_ids": full}, "decoder", rows, list(target_ids), "the target text")
    return Plan({"input_ids": full}, "decoder", [len(ids) - 1], [], "the next token")


def plan_encoder(ids: list[int], mask_id: int | None, head: str, device: torch.device) -> Plan:
    """BERT: explain the predictions at [MASK] tokens (or everywhere), or the predicted class."""
    plan = Plan({"input_ids": torch.tensor([ids], device=device)}, "encoder")
    if head == "sequence-classification":
        plan.what = "the predicted class"
    elif head == "embedding":
        plan.what = "the similarity to the nearest sentence"
    elif head == "question-answering":  # rows of the (2, T) logits: starts, ends
        plan.rows = [0, 1]
        plan.what = "the predicted answer's start and end"
    else:
        masked = [i for i, token in enumerate(ids) if token == mask_id]
        plan.rows = masked or list(range(len(ids)))
        plan.what = "the predictions at the [MASK] tokens" if masked else "every token's prediction"
    return plan


def plan_seq2seq(
    model: TformerModel, ids: list[int], target_ids: list[int] | None, device: torch.device
) -> Plan:
    """2017 Transformer: teacher-force `target_ids` (or the greedy translation) after the start
    token; explain the target tokens' log-probabilities."""
    start = model.config.start_id
    if start is None:
        raise ConfigError("the model config has no decoder_start_id or bos_id to start decoding")
    source = torch.tensor([ids], device=device)
    what = "the target text"
    if target_ids is None:
        target_ids, what = greedy_target(model, source), "the greedy translation"
    decoder_input = torch.tensor([[start, *target_ids]], device=device)
    rows = list(range(len(target_ids)))
    kwargs = {"input_ids": source, "decoder_input_ids": decoder_input}
    return Plan(kwargs, "decoder", rows, list(target_ids), what)


def greedy_target(model: TformerModel, source: Tensor) -> list[int]:
    """The model's greedy output for `source` (1, S), up to and including its EOS."""
    limit = min(MAX_GENERATED, model.config.max_seq_len - 1)
    tokens = generate(model, source, max_new_tokens=limit)[0].tolist()
    eos = model.config.eos_id
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def fill_labels(plan: Plan, logits: Tensor | None) -> None:
    """Explain the model's own choice (argmax) where no label was given."""
    if logits is None or plan.labels:
        return
    if logits.dim() == 2:  # (B, n_labels): sequence classification
        plan.labels = [int(logits[0].argmax())]
    else:
        plan.labels = [int(logits[0, row].argmax()) for row in plan.rows]


def score(plan: Plan, output: ModelOutput, neighbour: Tensor | None) -> Tensor:
    """The scalar the attributions explain, from the model's output."""
    if output.logits is None:  # embedding head: cosine with the nearest neighbour sentence
        if neighbour is None:
            raise InputError("nothing to explain for an embedding model without --sentences")
        return output.embeddings[0].float() @ neighbour
    log_probs = F.log_softmax(output.logits[0].float(), dim=-1)
    if log_probs.dim() == 1:
        return log_probs[plan.labels[0]]
    return log_probs[plan.rows, plan.labels].sum()


def pooled_embeddings(
    model: TformerModel, tokenizer: Tokenizer, sentences: Sequence[str], device: torch.device
) -> Tensor:
    """(N, d_model) L2-normalised sentence embeddings of the final hidden states (what the
    embedding head computes, for any encoder)."""
    rows = []
    with torch.no_grad():
        for sentence in sentences:
            ids = torch.tensor([encode_text(tokenizer, sentence, "sentence")], device=device)
            hidden = model(ids).last_hidden_state.float()  # (1, T, d_model)
            rows.append(sentence_embedding(hidden, None)[0])
    return torch.stack(rows)
