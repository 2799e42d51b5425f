"""LoRA adapters against PEFT: random-initialised `transformers` models, imported by tformer,
with adapters written by one library and read by the other; training, merging, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import tformer  # noqa: E402
from tformer import ModelConfig, build_model  # noqa: E402
from tformer.adapters import (  # noqa: E402
    LoraConfig,
    add_lora,
    load_peft_adapters,
    lora_adapters,
    merge_and_unload_lora,
    merge_lora,
    save_peft_adapters,
    unmerge_lora,
)
from tformer.adapters.lora import LoraAdapter  # noqa: E402
from tformer.adapters.peft_format import hf_module_names  # noqa: E402
from tformer.checkpoint import CheckpointError  # noqa: E402
from tformer.data import BatchStream, ShuffledBatches, TokenWindows, causal_lm_collate  # noqa: E402
from tformer.errors import ConfigError, InputError, TformerError  # noqa: E402
from tformer.pretrained import save_hf_directory  # noqa: E402
from tformer.quantize import quantize_int8  # noqa: E402
from tformer.training import TrainConfig, Trainer  # noqa: E402

TOL = 1e-5
VOCAB = 61


def _llama() -> torch.nn.Module:
    """GQA (4 query heads, 2 KV heads) and head_dim 16 != hidden 40 / 4 heads."""
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, intermediate_size=56, max_position_embeddings=64,
        rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def _bert(cls_name: str = "BertForMaskedLM", **extra: int) -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=40, **extra,
    )  # fmt: skip
    return getattr(transformers, cls_name)(config)


def _bart() -> torch.nn.Module:
    config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=1,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
        decoder_ffn_dim=48, max_position_embeddings=40,
    )  # fmt: skip
    return transformers.BartForConditionalGeneration(config)


_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def _gpt2() -> torch.nn.Module:
    """q, k and v fused into one Conv1D (c_attn), every weight stored transposed."""
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, **_IDS)
    return transformers.GPT2LMHeadModel(config)


def _phi3() -> torch.nn.Module:
    """qkv_proj fused with GQA (parts of unequal size), gate_up_proj fused; half of each head
    rotated, which only Phi-3 holds (with full rotary the model would export as Llama)."""
    config = transformers.Phi3Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
        partial_rotary_factor=0.5, **_IDS,
    )  # fmt: skip
    return transformers.Phi3ForCausalLM(config)


def _gpt_neox() -> torch.nn.Module:
    """query_key_value fused per head: head 0's q, k, v rows, then head 1's..."""
    config = transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=40, max_position_embeddings=64, rotary_pct=0.5, **_IDS,
    )  # fmt: skip
    return transformers.GPTNeoXForCausalLM(config)


HF_MODELS = {
    "llama": _llama, "bert": _bert, "bart": _bart,
    "gpt2": _gpt2, "phi3": _phi3, "gpt_neox": _gpt_neox,
}  # fmt: skip
PEFT_TARGETS = {  # HF module names, for adapters PEFT writes
    "llama": ["q_proj", "o_proj", "down_proj"],
    "bert": ["query", "attention.output.dense", "intermediate.dense"],
    "bart": ["q_proj", "out_proj", "fc2"],
    "gpt2": ["c_attn", "mlp.c_proj"],
    "phi3": ["qkv_proj", "gate_up_proj", "o_proj"],
    "gpt_neox": ["query_key_value", "dense_4h_to_h"],
}


@pytest.fixture(params=sorted(HF_MODELS))
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A random `transformers` model (float64, eval) and the HF directory it was saved to."""
    torch.manual_seed(0)
    hf = HF_MODELS[request.param]()
    hf.save_pretrained(tmp_path / "hf")
    return hf.double().eval(), tmp_path / "hf"


def _ours(directory: Path) -> tformer.TformerModel:
    model, _ = tformer.load(directory, dtype=torch.float64)
    return model


def _ids() -> torch.Tensor:
    return torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(2))


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Logits of `ids` (for an encoder-decoder, of its first 6 tokens as the target side)."""
    config = model.config
    seq2seq = getattr(
        config, "is_encoder_decoder", getattr(config, "arch", "") == "encoder-decoder"
    )
    extra = {"decoder_input_ids": ids[:, :6]} if seq2seq else {}
    with torch.no_grad():
        return model(input_ids=ids, **extra).logits


def _randomise_adapters(model: torch.nn.Module) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for adapter in lora_adapters(model).values():
            adapter.A.normal_()
            adapter.B.normal_(std=0.1)


def _peft_lora_names(model: torch.nn.Module) -> set[str]:
    """The HF modules PEFT adapted, without PEFT's own prefix."""
    return {
        name.removeprefix("base_model.model.")
        for name, m in model.named_modules()
        if isinstance(m, peft.tuners.lora.LoraLayer)
    }


def _assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert (a - b).abs().max().item() <= TOL, f"max diff {(a - b).abs().max()}"


@pytest.mark.parametrize("targets", [("q_proj", "v_proj", "ffn.down"), "all-linear"])
def test_our_adapters_load_in_peft_with_the_same_logits(pair, tmp_path, targets) -> None:
    hf, hf_dir = pair
    ours = _ours(hf_dir)
    add_lora(ours, LoraConfig(targets=targets, rank=4, alpha=8.0, dropout=0.1))
    _randomise_adapters(ours)
    ours.eval()
    ids = _ids()
    base = _logits(hf, ids)
    save_peft_adapters(ours, tmp_path / "adapter")
    adapted = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    theirs = _logits(adapted, ids)
    assert (theirs - base).abs().max() > 1e-2, "the adapters changed nothing: a vacuous test"
    _assert_close(_logits(ours, ids), theirs)


@pytest.mark.parametrize("rslora", [False, True])
def test_peft_adapters_load_in_tformer_with_the_same_logits(pair, tmp_path, rslora) -> None:
    hf, hf_dir = pair
    targets = PEFT_TARGETS[hf.config.model_type]
    config = peft.LoraConfig(r=4, lora_alpha=12, target_modules=targets, use_rslora=rslora)
    adapted = peft.get_peft_model(hf, config)
    torch.manual_seed(4)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    adapted.save_pretrained(tmp_path / "adapter")
    ours = _ours(hf_dir)
    loaded = load_peft_adapters(ours, tmp_path / "adapter")
    names = hf_module_names(ours)  # a fused HF layer's adapter is one per part here
    assert {names[n] for n in loaded} == _peft_lora_names(adapted) and len(loaded) >= 6
    ids = _ids()
    theirs = _logits(adapted.eval(), ids)
    with adapted.disable_adapter():
        assert (theirs - _logits(adapted, ids)).abs().max() > 1e-2, "a vacuous test"
    _assert_close(_logits(ours.eval(), ids), theirs)


def _bert_classifier(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    hf = _bert("BertForSequenceClassification", num_labels=3)
    hf.save_pretrained(tmp_path / "hf")
    return hf.double().eval(), tmp_path / "hf"


def test_a_head_trained_in_full_is_peft_modules_to_save_both_ways(tmp_path) -> None:
    """A new classifier is trained whole next to the adapters (`train`, PEFT's
    modules_to_save): PEFT loads ours with our logits, and ours loads PEFT's."""
    hf, hf_dir = _bert_classifier(tmp_path)
    ours = _ours(hf_dir)
    add_lora(ours, LoraConfig(targets=["q_proj", "v_proj"], rank=4, train=["head.classifier"]))
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert {"head.classifier.weight", "head.classifier.bias"} <= trainable
    _randomise_adapters(ours)
    with torch.no_grad():
        ours.head.classifier.weight.normal_()
    save_peft_adapters(ours, tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert saved["modules_to_save"] == ["classifier"]
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "ours").eval()
    ids = _ids()
    _assert_close(_logits(theirs, ids), _logits(ours.eval(), ids))

    torch.manual_seed(5)
    hf_again, _ = _bert_classifier(tmp_path / "again")
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["query"], modules_to_save=["classifier"]
    )
    adapted = peft.get_peft_model(hf_again, config)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.normal_(std=0.5)
    adapted.save_pretrained(tmp_path / "theirs")
    loaded = _ours(tmp_path / "again" / "hf")
    load_peft_adapters(loaded, tmp_path / "theirs")
    expected = _logits(adapted.eval(), ids)
    with adapted.disable_adapter():
        assert (expected - _logits(adapted, ids)).abs().max() > 1e-2, "a vacuous test"
    _assert_close(_logits(loaded.eval(), ids), expected)


def test_train_naming_nothing_is_a_config_error(tmp_path) -> None:
    _, hf_dir = _bert_classifier(tmp_path)
    with pytest.raises(ConfigError, match="names no module"):
        add_lora(_ours(hf_dir), LoraConfig(train=["head.nothing"]))


def test_all_linear_adapts_the_layers_peft_adapts(pair) -> None:
    """Every linear layer but the output projection (PEFT's get_output_embeddings)."""
    hf, hf_dir = pair
    ours = _ours(hf_dir)
    adapters = add_lora(ours, LoraConfig(targets="all-linear"))
    adapted = peft.get_peft_model(hf, peft.LoraConfig(target_modules="all-linear"))
    names = hf_module_names(ours)
    assert {names[n] for n in adapters} == _peft_lora_names(adapted)


def _lora_trainer(tmp_path: Path) -> Trainer:
    torch.manual_seed(0)
    _llama().save_pretrained(tmp_path / "hf")
    model, _ = tformer.load(tmp_path / "hf")
    add_lora(model, LoraConfig(targets="all-linear", rank=2, dropout=0.1))
    tokens = np.random.default_rng(0).integers(3, VOCAB, 400)
    windows = TokenWindows(tokens, 17, 1)
    train = BatchStream(windows, ShuffledBatches(len(windows), 4, 0), causal_lm_collate, seed=0)
    config = TrainConfig(max_steps=1, batch_size=4, lr=1e-2, precision="fp32", progress=False)
    return Trainer(model, config, train, None, tmp_path / "run")


def test_a_training_step_changes_only_adapter_tensors(tmp_path) -> None:
    trainer = _lora_trainer(tmp_path)
    model = trainer.model
    adapter_ids = {id(p) for a in lora_adapters(model).values() for p in a.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == adapter_ids
    before = {name: t.clone() for name, t in model.state_dict().items()}
    trainer.train_step()
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    adapter_names = {n for n in before if ".lora." in n}
    assert changed  # every B moves off zero; every base tensor is bitwise unchanged
    assert changed <= adapter_names
    assert {n for n in adapter_names if n.endswith(".B")} <= changed


def test_merged_outputs_equal_unmerged_and_unmerge_restores_the_weights(tmp_path) -> None:
    torch.manual_seed(0)
    _llama().save_pretrained(tmp_path)
    model, _ = tformer.load(tmp_path)
    original = {n: t.clone() for n, t in model.state_dict().items()}
    add_lora(model, LoraConfig(targets="all-linear", rank=3, alpha=6.0))
    _randomise_adapters(model)
    ids = _ids()
    unmerged = _logits(model, ids)
    merge_lora(model)
    merged_weights = {n: t.clone() for n, t in model.state_dict().items() if n in original}
    _assert_close(_logits(model, ids), unmerged)
    q = "decoder.blocks.0.self_attn.q_proj.weight"
    assert (merged_weights[q] - original[q]).abs().max() > 1e-2  # the update went into W
    unmerge_lora(model)
    _assert_close(_logits(model, ids), unmerged)
    for name, tensor in original.items():
        assert torch.allclose(model.state_dict()[name], tensor, atol=1e-6, rtol=0), name


def test_merge_and_unload_leaves_a_plain_model_that_peft_agrees_with(tmp_path) -> None:
    """Merged and unloaded: no adapter modules or hooks are left, the tensor names are the
    base's, and the logits are those of `transformers` + PEFT's merge_and_unload of the same
    adapters (an independent merge)."""
    torch.manual_seed(0)
    _llama().save_pretrained(tmp_path / "tf")
    model, _ = tformer.load(tmp_path / "tf")
    base_names = set(model.state_dict())
    add_lora(model, LoraConfig(targets=["q_proj", "v_proj", "ffn.down"], rank=4, alpha=8.0))
    _randomise_adapters(model)
    save_peft_adapters(model, tmp_path / "adapters")
    ids = _ids()
    adapted = _logits(model, ids)
    merge_and_unload_lora(model)
    assert set(model.state_dict()) == base_names and not lora_adapters(model)
    assert all(not m._forward_hooks for m in model.modules())
    _assert_close(_logits(model, ids), adapted)
    save_hf_directory(model, tmp_path / "merged-hf")
    merged_hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged-hf")
    save_hf_directory(tformer.load(tmp_path / "tf")[0], tmp_path / "base-hf")
    base_hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base-hf")
    reference = peft.PeftModel.from_pretrained(base_hf, tmp_path / "adapters").merge_and_unload()
    with torch.no_grad():
        expected = reference(ids).logits
        torch.testing.assert_close(merged_hf(ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_merging_into_a_tied_output_projection_is_refused(tmp_path) -> None:
    model = build_model(ModelConfig.preset("tiny-decoder"))
    assert model.config.tie_embeddings
    add_lora(model, LoraConfig(targets=["lm_head.proj"]))
    with pytest.raises(InputError, match="tied"):
        merge_lora(model)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"rank": 0}, "rank=0 must be >= 1"),
        ({"alpha": 0.0}, "alpha=0.0 must be > 0"),
        ({"dropout": 1.0}, r"dropout=1.0 must be in \[0, 1\)"),
        ({"rank": "8"}, "rank='8' must be an integer"),
        ({"targets": "q_proj("}, "is not a regex"),
        ({"targets": []}, "targets is empty"),
    ],
)
def test_invalid_lora_config_is_a_config_error(config, message) -> None:
    with pytest.raises(ConfigError, match=message):
        LoraConfig(**config)


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (["ffn.up"], {f"decoder.blocks.{i}.ffn.up" for i in range(4)}),
        (["proj"], {"lm_head.proj"}),  # a whole name component: not q_proj, k_proj...
        (r"decoder\.blocks\.0\.self_attn\.[qv]_proj", {"decoder.blocks.0.self_attn.q_proj",
                                                       "decoder.blocks.0.self_attn.v_proj"}),
    ],
)  # fmt: skip
def test_targets_match_a_name_suffix_or_a_whole_name_regex(targets, expected) -> None:
    model = build_model(ModelConfig.preset("llama-mini", n_layers=4))
    assert set(add_lora(model, LoraConfig(targets=targets))) == expected


def test_targets_matching_nothing_name_the_models_layers() -> None:
    model = build_model(ModelConfig.preset("tiny-decoder"))
    with pytest.raises(ConfigError, match=r"match no linear layer.*q_proj"):
        add_lora(model, LoraConfig(targets=["query"]))
    assert not any(isinstance(m, LoraAdapter) for m in model.modules())


def test_quantised_layers_are_refused() -> None:
    model = quantize_int8(build_model(ModelConfig.preset("tiny-decoder")))
    with pytest.raises(InputError, match="quantised"):
        add_lora(model, LoraConfig())


def test_adapters_on_some_parts_of_a_fused_layer_are_one_larger_peft_adapter(tmp_path) -> None:
    """q and v adapted, k not: GPT-2's c_attn gets one rank-2r adapter whose update is zero
    on k's rows, in rank_pattern / alpha_pattern; PEFT agrees, and it loads back equal."""
    torch.manual_seed(0)
    hf = _gpt2()
    hf.save_pretrained(tmp_path / "hf")
    hf = hf.double().eval()
    ours = _ours(tmp_path / "hf")
    add_lora(ours, LoraConfig(targets=["q_proj", "v_proj"], rank=3, alpha=6.0, rslora=True))
    _randomise_adapters(ours)
    save_peft_adapters(ours, tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["target_modules"] == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    assert set(saved["rank_pattern"].values()) == {6} and saved["fan_in_fan_out"] is True
    adapted = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    ids = _ids()
    expected = _logits(ours.eval(), ids)
    _assert_close(_logits(adapted, ids), expected)
    update = adapted.base_model.model.transformer.h[0].attn.c_attn.get_delta_weight("default")
    assert update[:, 32:64].abs().max() == 0 < update[:, :32].abs().min()  # (in, out): k's columns

    again = _ours(tmp_path / "hf")
    load_peft_adapters(again, tmp_path / "adapter")
    _assert_close(_logits(again.eval(), ids), expected)


def _peft_dir(tmp_path: Path, **changes: object) -> tuple[tformer.TformerModel, Path]:
    torch.manual_seed(0)
    hf = _llama()
    hf.save_pretrained(tmp_path / "hf")
    peft.get_peft_model(hf, peft.LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        tmp_path / "adapter"
    )
    file = tmp_path / "adapter" / "adapter_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))
    return _ours(tmp_path / "hf"), tmp_path / "adapter"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"peft_type": "IA3"}, "peft_type='IA3'; tformer reads LoRA adapters only"),
        ({"use_dora": True}, "does not implement use_dora=True"),
        ({"bias": "all"}, "does not implement bias='all'"),
    ],
)
def test_peft_adapters_tformer_cannot_apply_are_refused(tmp_path, changes, message) -> None:
    model, directory = _peft_dir(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_peft_adapters(model, directory)
    assert not lora_adapters(model)


def test_peft_adapter_for_another_model_is_refused_before_any_change(tmp_path) -> None:
    _, directory = _peft_dir(tmp_path)
    other = build_model(ModelConfig.preset("llama-mini"))
    with pytest.raises(CheckpointError, match=r"lora_A of .*q_proj is of shape \(2, 40\)") as error:
        load_peft_adapters(other, directory)
    assert isinstance(error.value, TformerError)
    assert not lora_adapters(other) and all(p.requires_grad for p in other.parameters())
