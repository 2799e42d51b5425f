"""Padding-free encoder stacks: running position-wise layers on the packed real tokens gives
the padded path's outputs, losses and gradients at every real position, and the packed path
steps aside whenever someone looks inside the stack (hooks, per-layer outputs)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from tformer import EncoderDecoder, EncoderModel, ModelConfig, build_model
from tformer.explainer.capture import capture
from tformer.models import TformerModel
from tformer.modules.packing import PackedLayout

ATOL = 1e-5
LENGTHS = [7, 3, 10, 1]  # one row without padding, one of a single token
POSITIONS = ["sinusoidal", "learned", "rotary"]
NORMS = ["post", "pre"]
LossFn = Callable[[TformerModel, torch.Tensor, torch.Tensor], torch.Tensor]


def _model(preset: str, **changes: object) -> TformerModel:
    torch.manual_seed(0)
    return build_model(ModelConfig.preset(preset, **changes))


def _batch(lengths: list[int] = LENGTHS) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) with pad id 0 and their mask."""
    torch.manual_seed(1)
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
    return torch.randint(4, 61, mask.shape) * mask, mask


def _use_packing(model: TformerModel, enabled: bool) -> None:
    model.encoder.padding_free = enabled


def _encoder_pass(model: TformerModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if isinstance(model, EncoderDecoder):
        return model.encode(ids, mask)
    return model(ids, attention_mask=mask).last_hidden_state


def test_pack_and_pad_are_boolean_indexing_and_its_inverse() -> None:
    _, mask = _batch()
    x = torch.randn(*mask.shape, 5)
    layout = PackedLayout.from_mask(mask)
    packed = layout.pack(x)  # (N, 5)
    torch.testing.assert_close(packed, x[mask.bool()], atol=0, rtol=0)
    torch.testing.assert_close(layout.pad(packed), x * mask[..., None], atol=0, rtol=0)


@pytest.mark.parametrize("norm_position", NORMS)
@pytest.mark.parametrize("positional", POSITIONS)
def test_packed_encoder_matches_each_sequence_run_alone(
    positional: str, norm_position: str
) -> None:
    model = _model("tiny-encoder", positional=positional, norm_position=norm_position).eval()
    ids, mask = _batch()
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).last_hidden_state
        for row, length in enumerate(LENGTHS):
            alone = model(ids[row : row + 1, :length]).last_hidden_state  # no padding at all
            torch.testing.assert_close(batched[row : row + 1, :length], alone, atol=ATOL, rtol=0)
    assert not batched[mask == 0].any()  # padding rows are zeros: the packed path ran


def _encoder_loss(model: TformerModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked-LM loss, padding labelled -100, as the MLM collator does."""
    labels = ids.masked_fill(mask == 0, -100)
    return model(ids, attention_mask=mask, labels=labels).loss


def _seq2seq_loss(model: TformerModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Teacher-forced loss over a padded source and a padded target."""
    target, target_mask = ids[:, :6], mask[:, :6]
    labels = target.masked_fill(target_mask == 0, -100)
    return model(
        ids, target, attention_mask=mask, decoder_attention_mask=target_mask, labels=labels
    ).loss


def _loss_and_grads(
    model: TformerModel, packed: bool, loss_fn: LossFn
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    _use_packing(model, packed)
    model.zero_grad()
    ids, mask = _batch()
    loss = loss_fn(model, ids, mask)
    loss.backward()
    hidden = _encoder_pass(model, ids, mask).detach()  # (B, T, d_model)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), hidden, grads


def _assert_same_training_step(model: TformerModel, loss_fn: LossFn) -> None:
    model.train()  # dropout is 0 in the tiny presets, so both passes are deterministic
    loss, hidden, grads = _loss_and_grads(model, True, loss_fn)
    ref_loss, ref_hidden, ref_grads = _loss_and_grads(model, False, loss_fn)
    real = _batch()[1].bool()
    assert not hidden[~real].any()  # padding rows are zeros: the packed path ran
    torch.testing.assert_close(loss, ref_loss, atol=ATOL, rtol=0)
    torch.testing.assert_close(hidden[real], ref_hidden[real], atol=ATOL, rtol=0)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=ATOL, rtol=0, msg=name)


@pytest.mark.parametrize("norm_position", NORMS)
@pytest.mark.parametrize("positional", POSITIONS)
def test_packed_encoder_training_step_matches_padded(positional: str, norm_position: str) -> None:
    model = _model("tiny-encoder", positional=positional, norm_position=norm_position)
    _assert_same_training_step(model, _encoder_loss)


def test_packed_grouped_query_rmsnorm_swiglu_encoder_matches_padded() -> None:
    model = _model(
        "tiny-encoder",
        positional="rotary",
        norm_position="pre",
        norm="rmsnorm",
        activation="swiglu",
        n_kv_heads=2,
    )
    _assert_same_training_step(model, _encoder_loss)


@pytest.mark.parametrize("norm_position", NORMS)
@pytest.mark.parametrize("positional", POSITIONS)
def test_packed_seq2seq_encoder_training_step_matches_padded(
    positional: str, norm_position: str
) -> None:
    model = _model("tiny-seq2seq", positional=positional, norm_position=norm_position)
    _assert_same_training_step(model, _seq2seq_loss)


@pytest.mark.parametrize(
    "head", ["sequence-classification", "token-classification", "embedding", "masked-lm"]
)
def test_heads_give_the_padded_results_at_real_positions(head: str) -> None:
    model = _model("tiny-encoder", head=head, n_labels=3).eval()
    ids, mask = _batch()
    outputs = []
    for packed in (True, False):
        _use_packing(model, packed)
        with torch.no_grad():
            out = model(ids, attention_mask=mask)
        result = out.embeddings if head == "embedding" else out.logits
        outputs.append(result[mask.bool()] if result.dim() == 3 else result)
    torch.testing.assert_close(outputs[0], outputs[1], atol=ATOL, rtol=0)


def _padding_rows(model: EncoderModel, **kwargs: object) -> torch.Tensor:
    ids, mask = _batch()
    with torch.no_grad():
        return model(ids, attention_mask=mask, **kwargs).last_hidden_state[mask == 0]


def test_per_layer_outputs_and_captured_passes_use_the_padded_path() -> None:
    """Passes that return or observe per-layer tensors see the (B, T, ...) layout; after the
    capture the stack runs packed again."""
    model = _model("tiny-encoder").eval()
    assert isinstance(model, EncoderModel)
    assert not _padding_rows(model).any()  # plain pass: packed
    assert _padding_rows(model, output_hidden_states=True).any()
    assert _padding_rows(model, output_attentions=True).any()
    with capture(model) as seen:
        assert _padding_rows(model).any()
    assert seen["encoder"].layers[0].residual["ffn"].shape[:2] == _batch()[0].shape
    assert not _padding_rows(model).any()


def test_batches_without_padding_and_causal_stacks_are_never_packed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(mask: torch.Tensor) -> PackedLayout:
        raise AssertionError("packed a pass that has nothing to skip or must stay padded")

    monkeypatch.setattr(PackedLayout, "from_mask", refuse)
    ids, mask = _batch([5, 5])
    with torch.no_grad():
        _model("tiny-encoder").eval()(ids, attention_mask=mask)
        ids, mask = _batch()
        _model("tiny-decoder").eval()(ids, attention_mask=mask)
