"""Model-level properties of all three families: causality, padding invariance, KV-cache
equivalence, gradient flow (each tiny model can overfit one batch)."""

from __future__ import annotations

import pytest
import torch

from tformer import DecoderOnlyLM, EncoderDecoder, EncoderModel, ModelConfig, build_model
from tformer.models import TformerModel

ATOL = 1e-5


def _tiny(family: str, **changes: object) -> TformerModel:
    preset = {"decoder": "tiny-decoder", "encoder": "tiny-encoder", "seq2seq": "tiny-seq2seq"}
    return build_model(ModelConfig.preset(preset[family], **changes)).eval()


def _ids(batch: int, length: int, vocab: int = 61) -> torch.Tensor:
    return torch.randint(4, vocab, (batch, length))  # ids >= 4: no special tokens


def _right_pad(ids: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, T) -> ids and attention mask padded on the right to `length` with pad id 0."""
    pad = length - ids.shape[1]
    padded = torch.cat((ids, torch.zeros(1, pad, dtype=ids.dtype)), dim=1)
    mask = torch.cat((torch.ones_like(ids), torch.zeros(1, pad, dtype=ids.dtype)), dim=1)
    return padded, mask


# ---- causality ------------------------------------------------------------------------
DECODER_VARIANTS = {
    "gpt": {},
    "llama": {"positional": "rotary", "norm": "rmsnorm", "activation": "swiglu", "n_kv_heads": 2},
}


@pytest.mark.parametrize("variant", DECODER_VARIANTS)
def test_decoder_outputs_never_depend_on_later_tokens(variant: str) -> None:
    model = _tiny("decoder", **DECODER_VARIANTS[variant])
    ids = _ids(2, 12)
    changed = ids.clone()
    changed[:, 7:] = _ids(2, 5)
    with torch.no_grad():
        before, after = model(ids).logits, model(changed).logits
    torch.testing.assert_close(before[:, :7], after[:, :7], atol=ATOL, rtol=0)
    assert not torch.allclose(before[:, 7:], after[:, 7:])  # the change is visible later on


def test_seq2seq_decoder_outputs_never_depend_on_later_target_tokens() -> None:
    model = _tiny("seq2seq")
    source, target = _ids(2, 9), _ids(2, 8)
    changed = target.clone()
    changed[:, 5:] = _ids(2, 3)
    with torch.no_grad():
        before, after = model(source, target).logits, model(source, changed).logits
    torch.testing.assert_close(before[:, :5], after[:, :5], atol=ATOL, rtol=0)


# ---- padding invariance -----------------------------------------------------------------
def _forward(family: str, model: TformerModel, ids: torch.Tensor, mask: torch.Tensor | None):
    if family == "seq2seq":  # pad both the source and the target the same way
        return model(ids, ids, attention_mask=mask, decoder_attention_mask=mask).logits
    return model(ids, attention_mask=mask).logits


@pytest.mark.parametrize("family", ["decoder", "encoder", "seq2seq"])
def test_outputs_do_not_change_with_padding_or_batch_neighbours(family: str) -> None:
    model = _tiny(family)
    seq = _ids(1, 6)
    with torch.no_grad():
        alone = _forward(family, model, seq, None)
        padded_ids, padded_mask = _right_pad(seq, 10)
        padded = _forward(family, model, padded_ids, padded_mask)
        neighbours = _ids(2, 10)
        batch_ids = torch.cat((padded_ids, neighbours))
        batch_mask = torch.cat((padded_mask, torch.ones_like(neighbours)))
        batched = _forward(family, model, batch_ids, batch_mask)
    torch.testing.assert_close(padded[:, :6], alone, atol=ATOL, rtol=0)
    torch.testing.assert_close(batched[:1, :6], alone, atol=ATOL, rtol=0)


def test_left_padded_decoder_prompt_with_position_ids_matches_unpadded() -> None:
    model = _tiny("decoder", **DECODER_VARIANTS["llama"])
    seq = _ids(1, 5)
    ids = torch.cat((torch.zeros(1, 3, dtype=torch.long), seq), dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        alone = model(seq).logits
        left = model(ids, attention_mask=mask, position_ids=position_ids).logits
    torch.testing.assert_close(left[:, 3:], alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", ["decoder", "encoder", "seq2seq"])
def test_fully_padded_rows_give_no_nan(family: str) -> None:
    model = _tiny(family)
    ids = torch.cat((_ids(1, 6), torch.zeros(1, 6, dtype=torch.long)))
    mask = torch.tensor([[1] * 6, [0] * 6])
    with torch.no_grad():
        logits = _forward(family, model, ids, mask)
    assert torch.isfinite(logits).all()


# ---- KV cache ---------------------------------------------------------------------------
@pytest.mark.parametrize("n_kv_heads", [4, 2])
@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_decoder_kv_cache_gives_the_full_forward_logits(n_kv_heads: int, positional: str) -> None:
    model = _tiny("decoder", n_kv_heads=n_kv_heads, positional=positional)
    assert isinstance(model, DecoderOnlyLM)
    ids = _ids(2, 10)
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache()
        steps = [model(ids[:, :4], cache=cache).logits]  # prompt in one go, then one at a time
        steps += [model(ids[:, t : t + 1], cache=cache).logits for t in range(4, 10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_seq2seq_kv_cache_gives_the_full_forward_logits(n_kv_heads: int) -> None:
    model = _tiny("seq2seq", n_kv_heads=n_kv_heads)
    assert isinstance(model, EncoderDecoder)
    source, target = _ids(2, 9), _ids(2, 7)
    source_mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    with torch.no_grad():
        full = model(source, target, attention_mask=source_mask).logits
        memory = model.encode(source, source_mask)
        cache = model.new_cache()
        steps = [
            model.decode(
                target[:, t : t + 1], memory, attention_mask=source_mask, cache=cache
            ).logits
            for t in range(7)
        ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)


# ---- gradient flow ----------------------------------------------------------------------
def _overfit(model: TformerModel, loss_fn, steps: int = 150) -> float:
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return loss_fn().item()


def test_tiny_decoder_overfits_one_batch() -> None:
    model = _tiny("decoder")
    ids = _ids(4, 16)
    labels = torch.cat((ids[:, 1:], torch.full((4, 1), -100)), dim=1)
    assert _overfit(model, lambda: model(ids, labels=labels).loss) < 0.1


def test_tiny_seq2seq_overfits_one_batch() -> None:
    model = _tiny("seq2seq")
    source, target = _ids(4, 12), _ids(4, 12)
    decoder_input = torch.cat((torch.ones(4, 1, dtype=torch.long), target[:, :-1]), dim=1)
    assert _overfit(model, lambda: model(source, decoder_input, labels=target).loss) < 0.1


@pytest.mark.parametrize(
    "head", ["masked-lm", "sequence-classification", "token-classification", "question-answering"]
)
def test_tiny_encoder_overfits_one_batch(head: str) -> None:
    model = _tiny("encoder", head=head, n_labels=3)
    assert isinstance(model, EncoderModel)
    ids = _ids(4, 16)
    if head == "masked-lm":
        labels = torch.full_like(ids, -100)
        labels[:, ::3] = ids[:, ::3]
        ids = ids.masked_fill(labels != -100, 3)  # 3 = the tiny preset's mask id
    elif head == "sequence-classification":
        labels = torch.tensor([0, 1, 2, 1])
    elif head == "question-answering":  # (start, end) per row
        labels = torch.tensor([[1, 3], [2, 2], [0, 5], [4, 9]])
    else:
        labels = ids % 3
    assert _overfit(model, lambda: model(ids, labels=labels).loss) < 0.1


def test_every_parameter_receives_a_gradient() -> None:
    model = _tiny("seq2seq")
    model.train()
    source, target = _ids(2, 6), _ids(2, 5)
    model(source, target, labels=target).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or p.grad.eq(0).all()]
    assert missing == []
