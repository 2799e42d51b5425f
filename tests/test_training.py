"""Trainer: objectives' losses vs hand computation, schedules, exact resume, checkpoints, metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tformer import ModelConfig, build_model
from tformer.checkpoint import BEST, list_checkpoints
from tformer.data import (
    BatchStream,
    ClassificationCollator,
    MaskedLMCollator,
    Seq2SeqCollator,
    SequentialBatches,
    ShuffledBatches,
    TokenWindows,
    causal_lm_collate,
)
from tformer.training import TrainConfig, Trainer
from tformer.training.metrics import read_metrics
from tformer.training.optim import lr_multiplier
from tformer.training.plot import plot_run

IGNORE = -100


def _nll(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Per-target loss written out: -(1-e) log p(y) - e * mean_c log p(c) (Szegedy et al.)."""
    logp = logits.double().log_softmax(-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(1 - smoothing) * picked - smoothing * logp.mean(-1)


# ---- each objective's loss, hand-computed from the logits --------------------------------
def test_causal_lm_loss_is_next_token_cross_entropy():
    model = build_model(ModelConfig.preset("tiny-decoder"))
    tokens = np.random.default_rng(0).integers(3, 61, 200)
    windows = TokenWindows(tokens, window=9)
    batch = causal_lm_collate([windows[0], windows[3]], torch.Generator())
    out = model(**batch)
    # position t predicts token t + 1 of the same window
    expected = _nll(out.logits, torch.as_tensor(np.stack([tokens[1:9], tokens[28:36]]))).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_mlm_loss_counts_only_masked_positions():
    model = build_model(ModelConfig.preset("tiny-encoder"))
    collate = MaskedLMCollator(mask_id=3, vocab_size=61, special_ids=[0, 1, 2, 3], mask_prob=0.3)
    rows = list(np.random.default_rng(1).integers(4, 61, (3, 20)))
    batch = collate(rows, torch.Generator().manual_seed(0))
    out = model(**batch)
    picked = batch["labels"] != IGNORE
    expected = _nll(out.logits[picked], batch["labels"][picked]).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_seq2seq_loss_with_label_smoothing_matches_the_formula():
    model = build_model(ModelConfig.preset("tiny-seq2seq"))
    batch = Seq2SeqCollator(0, 1, 2)([([5, 6, 7], [8, 9]), ([5], [8, 9, 10])], torch.Generator())
    out = model(**batch, label_smoothing=0.1)
    real = batch["labels"] != IGNORE
    expected = _nll(out.logits[real], batch["labels"][real], smoothing=0.1).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_classification_loss_is_cross_entropy_of_the_sequence_label():
    config = ModelConfig.preset("tiny-encoder", head="sequence-classification", n_labels=3)
    model = build_model(config)
    batch = ClassificationCollator(0)([([5, 6, 7], 2), ([5, 9], 0)], torch.Generator())
    out = model(**batch)
    assert out.loss.item() == pytest.approx(
        _nll(out.logits, batch["labels"]).mean().item(), rel=1e-5
    )


# ---- schedules -----------------------------------------------------------------------------
def test_noam_schedule_is_the_papers_formula():
    f = lr_multiplier(TrainConfig(schedule="noam", warmup_steps=4000, lr=1.0), d_model=512)
    for step in (1, 100, 4000, 4001, 100_000):  # the paper counts steps from 1
        expected = 512**-0.5 * min(step**-0.5, step * 4000**-1.5)
        assert f(step - 1) == pytest.approx(expected)
    assert max(range(1, 10_000), key=lambda s: f(s - 1)) == 4000


def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    f = lr_multiplier(TrainConfig(max_steps=1000, warmup_steps=100, lr=1e-3, min_lr=1e-4), 64)
    assert f(0) == pytest.approx(0.01)
    assert f(99) == pytest.approx(1.0)
    assert f(550) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(1000) == pytest.approx(0.1)


# ---- a tiny run ----------------------------------------------------------------------------
def _tiny_trainer(run_dir, *, dropout=0.1, **overrides) -> Trainer:
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("tiny-decoder", dropout=dropout, max_seq_len=16))
    tokens = np.random.default_rng(0).integers(3, 61, 4000)
    options = {
        "max_steps": 8,
        "batch_size": 4,
        "grad_accum_steps": 2,
        "warmup_steps": 2,
        "precision": "fp32",  # exact comparisons: no bf16 autocast where "auto" would pick it
        "eval_every": 4,
        "eval_batches": 2,
        "log_every": 1,
        "progress": False,
        **overrides,
    }
    config = TrainConfig(**options)
    train_set, val_set = TokenWindows(tokens[:3000], 17, 1), TokenWindows(tokens[3000:], 17)
    train = BatchStream(train_set, ShuffledBatches(len(train_set), 4, 0), causal_lm_collate, seed=0)
    val = BatchStream(val_set, SequentialBatches(len(val_set), 4), causal_lm_collate)
    return Trainer(model, config, train, val, run_dir)


def _losses(run_dir) -> list[tuple]:
    return [
        (m["step"], m.get("loss"), m.get("grad_norm"), m.get("val_loss"))
        for m in read_metrics(run_dir)
    ]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path, optimizer):
    # log_every=2 and save_every=3: a log window spans the checkpoint it resumes from
    whole = _tiny_trainer(tmp_path / "whole", log_every=2, optimizer=optimizer)
    whole.fit()
    first = _tiny_trainer(tmp_path / "split", save_every=3, log_every=2, optimizer=optimizer)
    first.config = first.config.replace(max_steps=5)  # stop at 5: last checkpoint is step 3
    first.fit()
    (tmp_path / "split" / "checkpoints" / "step-00000005").rename(tmp_path / "unused")
    torch.manual_seed(123)  # a resumed process starts with unrelated RNG state
    resumed = _tiny_trainer(tmp_path / "split", save_every=3, log_every=2, optimizer=optimizer)
    resumed.fit(list_checkpoints(tmp_path / "split")[-1])
    for a, b in zip(
        whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert _losses(tmp_path / "whole") == _losses(tmp_path / "split")


def test_checkpoints_keep_the_last_k_and_the_best(tmp_path):
    trainer = _tiny_trainer(tmp_path, save_every=2, keep_last=2, dropout=0.0)
    result = trainer.fit()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000006", "step-00000008"]
    evals = [m for m in read_metrics(tmp_path) if m["kind"] == "eval"]
    assert result.best_val_loss == min(m["val_loss"] for m in evals)
    best = torch.load(tmp_path / BEST / "trainer_state.pt", weights_only=False)
    assert best["best_val_loss"] == result.best_val_loss


def test_metrics_are_json_lines_with_the_documented_fields(tmp_path):
    _tiny_trainer(tmp_path).fit()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in lines if m["kind"] == "train"]
    assert [m["step"] for m in train] == list(range(1, 9))
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"} <= set(train[0])
    assert [m["step"] for m in lines if m["kind"] == "eval"] == [4, 8]
    assert plot_run(tmp_path).stat().st_size > 1000


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tmp_path):
    trainer = _tiny_trainer(tmp_path, lr=1e-9, eval_every=1, early_stopping_patience=2)
    trainer.config = trainer.config.replace(warmup_steps=1, max_steps=50)
    result = trainer.fit()
    assert result.stopped_early
    assert result.step < 50


def test_a_target_validation_loss_stops_the_run_at_the_first_evaluation_reaching_it(tmp_path):
    """Evaluations every 2 steps: the run stops at the first whose loss is at or below the
    target (set between the losses of the 1st and the 3rd evaluation of an unstopped run)."""
    free = _tiny_trainer(tmp_path / "free", lr=3e-3, eval_every=2, max_steps=12)
    free.fit()
    losses = [m["val_loss"] for m in read_metrics(tmp_path / "free") if m["kind"] == "eval"]
    assert losses[2] < losses[0]
    target = (losses[0] + losses[2]) / 2
    expected = 2 * next(i + 1 for i, loss in enumerate(losses) if loss <= target)
    stopped = _tiny_trainer(tmp_path / "stopped", lr=3e-3, eval_every=2, max_steps=12)
    stopped.config = stopped.config.replace(target_val_loss=target)
    result = stopped.fit()
    assert result.stopped_early and result.step == expected < 12
    assert result.val_loss <= target


def test_grad_accumulation_equals_one_big_batch(tmp_path):
    big = _tiny_trainer(tmp_path / "a", dropout=0.0, grad_accum_steps=1, max_steps=1)
    big.train_data.plan = ShuffledBatches(len(big.train_data.dataset), 8, 0)
    small = _tiny_trainer(tmp_path / "b", dropout=0.0, grad_accum_steps=2, max_steps=1)
    small.train_data.plan = ShuffledBatches(len(small.train_data.dataset), 4, 0)
    big.train_step()
    small.train_step()
    for a, b in zip(big.model.parameters(), small.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_time_budget_sizes_max_steps_from_the_measured_step_time(monkeypatch):
    """A probe whose steps take 20 ms gives budget / 0.02 steps (sleep only overshoots, so at
    most that many), and caps the run at 15% over the budget."""
    import time as time_module

    from tformer.training.budget import fit_to_budget
    from tformer.training.distributed import Distributed

    class SleepingTrainer:
        def train_step(self) -> None:
            time_module.sleep(0.02)

    threads = torch.get_num_threads()
    config = TrainConfig(time_budget_s=2.0, warmup_steps=10, progress=False)
    try:
        sized = fit_to_budget(config, lambda c, d: SleepingTrainer(), Distributed())
    finally:
        torch.set_num_threads(threads)
    assert 60 <= sized.max_steps <= 100
    assert sized.max_time_s == pytest.approx(2.3) and sized.time_budget_s is None
    tiny = fit_to_budget(
        config.replace(time_budget_s=0.01), lambda c, d: SleepingTrainer(), Distributed()
    )
    torch.set_num_threads(threads)
    assert tiny.max_steps == config.warmup_steps + 1  # never shorter than the warm-up


def test_activation_checkpointing_trains_the_same_steps(tmp_path) -> None:
    """`activation_checkpointing = true` recomputes blocks in backward: losses, gradient norms
    and weights after three steps (with dropout) equal those of a plain run."""
    plain = _tiny_trainer(tmp_path / "plain", max_steps=3)
    recomputed = _tiny_trainer(tmp_path / "recomputed", max_steps=3, activation_checkpointing=True)
    for step in range(3):
        torch.manual_seed(step)  # the same dropout masks for both
        expected = plain.train_step()[:2]
        torch.manual_seed(step)
        assert recomputed.train_step()[:2] == pytest.approx(expected, rel=1e-6)
    for a, b in zip(plain.model.parameters(), recomputed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
