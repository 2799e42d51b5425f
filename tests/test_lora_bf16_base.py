"""A frozen base held in bfloat16 under LoRA (`base_dtype`): the base tensors are bf16 and
frozen, the adapters float32 and trained, and the outputs those of the float32 model with
the same adapters in PEFT (up to bf16 rounding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import tformer  # noqa: E402
from tformer import kernels  # noqa: E402
from tformer.adapters import LoraConfig, add_lora, lora_adapters, save_peft_adapters  # noqa: E402
from tformer.adapters.lora import base_dtype  # noqa: E402
from tformer.data import BatchStream, ShuffledBatches, TokenWindows, causal_lm_collate  # noqa: E402
from tformer.errors import ConfigError  # noqa: E402
from tformer.training import TrainConfig, Trainer  # noqa: E402

VOCAB = 61


def _llama_dir(tmp_path: Path) -> Path:
    """GQA (4 query heads, 2 KV heads), head_dim 12 != hidden 40 / 4 heads."""
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=12, intermediate_size=56, max_position_embeddings=64,
        rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def _randomise(model: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for adapter in lora_adapters(model).values():
            adapter.B.normal_(std=0.3)


def _bf16_base(directory: Path) -> torch.nn.Module:
    model, _ = tformer.load(directory)
    add_lora(model, LoraConfig(targets="all-linear", rank=4, alpha=8.0, base_dtype="bf16"))
    return model


def test_a_bf16_base_is_frozen_bf16_and_only_its_float32_adapters_get_gradients(
    tmp_path,
) -> None:
    model = _bf16_base(_llama_dir(tmp_path))
    _randomise(model)
    adapter_ids = {id(p) for a in lora_adapters(model).values() for p in a.parameters()}
    for name, param in model.named_parameters():
        is_adapter = id(param) in adapter_ids
        assert param.requires_grad == is_adapter, name
        assert param.dtype == (torch.float32 if is_adapter else torch.bfloat16), name
    ids = torch.randint(3, VOCAB, (2, 9))
    logits = model(ids).logits
    torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten()).backward()
    for name, param in model.named_parameters():
        if id(param) in adapter_ids:
            assert param.grad is not None and param.grad.abs().max() > 0, name
        else:
            assert param.grad is None, name


def test_outputs_are_those_of_the_float32_model_with_the_same_adapters_in_peft(tmp_path) -> None:
    directory = _llama_dir(tmp_path)
    ours = _bf16_base(directory)
    _randomise(ours)
    save_peft_adapters(ours, tmp_path / "adapters")
    reference = transformers.AutoModelForCausalLM.from_pretrained(directory)
    theirs = peft.PeftModel.from_pretrained(reference, tmp_path / "adapters").eval()
    ids = torch.randint(3, VOCAB, (2, 9))
    with torch.no_grad():
        expected = theirs(ids).logits
        with theirs.disable_adapter():
            assert (expected - theirs(ids).logits).abs().max() > 0.1, "a vacuous test"
        got = ours.eval()(ids).logits.float()
    scale = expected.abs().max()  # bf16 keeps 8 bits of mantissa: a few % after 2 layers
    assert (got - expected).abs().max() < 0.06 * scale


def test_a_training_step_moves_the_adapters_and_leaves_the_bf16_base_bitwise(tmp_path) -> None:
    model = _bf16_base(_llama_dir(tmp_path))
    tokens = np.random.default_rng(0).integers(3, VOCAB, 400)
    windows = TokenWindows(tokens, 17, 1)
    train = BatchStream(windows, ShuffledBatches(len(windows), 4, 0), causal_lm_collate, seed=0)
    config = TrainConfig(max_steps=1, batch_size=4, lr=1e-2, precision="fp32", progress=False)
    trainer = Trainer(model, config, train, None, tmp_path / "run")
    before = {name: t.clone() for name, t in model.state_dict().items()}
    trainer.train_step()
    changed = {n for n, t in model.state_dict().items() if not torch.equal(before[n], t)}
    assert changed == {n for n in before if n.endswith(".lora.B") or n.endswith(".lora.A")}


def test_a_head_trained_in_full_keeps_float32_next_to_a_bf16_base(tmp_path) -> None:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=40, num_labels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "hf")
    fp32, _ = tformer.load(tmp_path / "hf")
    bf16, _ = tformer.load(tmp_path / "hf")
    for model, dtype in ((fp32, "fp32"), (bf16, "bf16")):
        lora = LoraConfig(targets=["q_proj", "v_proj"], train=["head.classifier"], base_dtype=dtype)
        add_lora(model, lora)
        _randomise(model)
        with torch.no_grad():  # logits well above bf16's rounding of the pooled vector
            model.head.classifier.weight.copy_(
                torch.randn(3, 32, generator=torch.Generator().manual_seed(2))
            )
    assert bf16.head.classifier.weight.dtype == torch.float32
    assert bf16.encoder.blocks[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    ids = torch.randint(3, VOCAB, (2, 9))
    expected = fp32.eval()(ids).logits
    got = bf16.eval()(ids).logits
    got.float().sum().backward()
    assert bf16.head.classifier.weight.grad.abs().max() > 0
    # post-norm BERT rounds each block's LayerNorm output to bf16: ~10% on these logits
    assert (got.float() - expected).abs().max() < 0.15 * expected.abs().max()


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, native) -> None:
    monkeypatch.setattr(kernels, "bf16_is_fast", lambda device: native)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert base_dtype(model, LoraConfig(base_dtype="auto")) == (
        torch.bfloat16 if native else torch.float32
    )


def test_an_unknown_base_dtype_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="base_dtype='fp16'; use fp32, bf16 or auto"):
        LoraConfig(base_dtype="fp16")
