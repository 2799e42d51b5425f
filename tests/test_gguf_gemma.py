"""GGUF import of llama.cpp's `gemma`, `gemma2` and `gemma3` architectures, on small files
written here as llama.cpp's converter writes them: tensors named by the `gguf` package's own
map (`gguf.TensorNameMap`), 1 added to every RMSNorm weight, no output matrix (tied), the
caps and window as keys, nothing that says the scores' factor or the block pattern (llama.cpp
fixes those per architecture and size). The reference is the `transformers` model holding
the stored weights; where llama-cpp-python is installed, llama.cpp itself runs the same file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

import tformer  # noqa: E402
from hf_parity import randomise  # noqa: E402
from test_pretrained_gguf import TOKENS, _byte_level_vocabulary, _dequantised, _stored  # noqa: E402

Q = gguf.GGMLQuantizationType
WINDOW = 5  # the batches have 16 tokens
SHAPE = dict(
    vocab_size=len(TOKENS), hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, intermediate_size=64, max_position_embeddings=128, rms_norm_eps=1e-6,
    bos_token_id=27, eos_token_id=28, pad_token_id=0,
)  # fmt: skip
ARCH = {"gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3"}


def _gemma() -> torch.nn.Module:
    return transformers.GemmaForCausalLM(transformers.GemmaConfig(**SHAPE, num_hidden_layers=2))


def _gemma2(layers: int = 3, scalar: int = 16) -> torch.nn.Module:
    """Local, global, local; caps that bind. query_pre_attn_scalar is head_dim (16, not
    hidden / heads = 8): what llama.cpp uses at every size but 27B's (46 blocks)."""
    config = transformers.Gemma2Config(
        **SHAPE, num_hidden_layers=layers, query_pre_attn_scalar=scalar,
        sliding_window=WINDOW, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
    )  # fmt: skip
    return transformers.Gemma2ForCausalLM(config)


def _gemma3() -> torch.nn.Module:
    """Five local blocks, then a global one whose rotary is linearly rescaled; the local
    blocks' base is 10000, which llama.cpp fixes for Gemma 3 (no key holds it)."""
    rope = {
        "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e5},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    }
    config = transformers.Gemma3TextConfig(
        **SHAPE, num_hidden_layers=6, query_pre_attn_scalar=16, sliding_window=WINDOW,
        rope_parameters=rope,
    )  # fmt: skip
    return transformers.Gemma3ForCausalLM(config)


MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "gemma": _gemma,
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "gemma2-27b-rule": lambda: _gemma2(layers=46, scalar=8),  # 27B's factor: hidden / heads
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomise(MODELS[name]())


def _write(path: Path, model: torch.nn.Module, kind: Q) -> dict[str, torch.Tensor]:
    """The GGUF file of `model`, matrices stored as `kind` (norms F32), as llama.cpp's
    converter writes it; returns the stored weights under their Hugging Face names (norm
    weights as transformers holds them, without the added 1)."""
    c = model.config
    arch = ARCH[c.model_type]
    writer = gguf.GGUFWriter(str(path), arch)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(c.attn_logit_softcapping)
        writer.add_final_logit_softcapping(c.final_logit_softcapping)
        writer.add_sliding_window(c.sliding_window)
    if arch == "gemma3":
        full = c.rope_parameters["full_attention"]
        writer.add_rope_freq_base(full["rope_theta"])
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(full["factor"])
        writer.add_sliding_window(c.sliding_window)
    _byte_level_vocabulary(writer)
    stored = {}
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight":  # tied: the converter skips it
            continue
        data = tensor.numpy()
        if hf_name.endswith("norm.weight"):
            data = data + 1
        kind_here = kind if data.ndim == 2 else Q.F32
        raw = _stored(data, kind_here, np.random.default_rng(0))
        value = _dequantised(raw, kind_here)
        stored[hf_name] = torch.from_numpy(value - 1 if hf_name.endswith("norm.weight") else value)
        name = names.get_name(hf_name.removesuffix(".weight")) + ".weight"
        writer.add_tensor(name, raw, raw_dtype=kind_here)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, len(TOKENS), (2, 16), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    return ids, mask


@pytest.mark.parametrize("kind", [Q.F32, Q.Q8_0], ids=["f32", "q8_0"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_gguf_loads_with_the_logits_of_transformers(tmp_path: Path, name: str, kind: Q) -> None:
    """The transformers model holding the file's weights gives tformer's logits, on 16
    positions (past the window), one row padded."""
    model = _model(name)
    model.load_state_dict(_write(tmp_path / "m.gguf", model, kind), strict=False)
    model.tie_weights()
    ours, tokenizer = tformer.load(tmp_path / "m.gguf")
    assert tokenizer is not None and tokenizer.token_id("eos") == 28
    ids, mask = _batch()
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits[mask.bool()]
        mine = ours(ids, attention_mask=mask).logits[mask.bool()]
    assert reference.std() > 0.1
    assert (mine - reference).abs().max().item() <= 1e-5


def test_gguf_settings_arrive_in_the_config(tmp_path: Path) -> None:
    """What llama.cpp fixes by architecture and size, and what the keys say."""
    configs = {}
    for name in ("gemma2", "gemma3", "gemma2-27b-rule"):
        _write(tmp_path / f"{name}.gguf", _model(name), Q.F32)
        configs[name] = tformer.load(tmp_path / f"{name}.gguf")[0].config
    gemma2, gemma3, large = configs["gemma2"], configs["gemma3"], configs["gemma2-27b-rule"]
    assert gemma2.layer_types == ("sliding", "full", "sliding") and gemma2.sliding_window == 5
    assert (gemma2.attention_softcap, gemma2.logit_softcap) == (2.0, 3.0)
    assert gemma2.attention_scale == pytest.approx(16**-0.5)
    assert large.attention_scale == pytest.approx(8**-0.5)
    assert gemma3.layer_types == ("sliding",) * 5 + ("full",)
    assert (gemma3.rope_theta, gemma3.rope_local_theta) == (1e5, 1e4)
    assert (gemma3.rope_scaling, gemma3.rope_factor) == ("linear", 2.0)
    assert gemma3.norm_weight_offset == 1.0


@pytest.mark.parametrize("name", ["gemma", "gemma2", "gemma3"])
def test_llama_cpp_runs_the_same_file_with_tformers_logits(tmp_path: Path, name: str) -> None:
    """llama.cpp, the program these files are written for, on the same F32 file: its logits
    equal tformer's to its own rounding (it computes attention in f16), which checks the
    conventions above (the added 1, the factor, the pattern, the local base) against it."""
    lc = pytest.importorskip("llama_cpp")  # a bench extra
    from test_gguf_export_llama_cpp import llama_cpp_logits

    lc.llama_backend_init()
    model = _model(name)
    _write(tmp_path / "m.gguf", model, Q.F32)
    ours, _ = tformer.load(tmp_path / "m.gguf")
    ids = _batch()[0][0].tolist()
    params = lc.llama_model_default_params()
    theirs_model = lc.llama_model_load_from_file(str(tmp_path / "m.gguf").encode(), params)
    assert theirs_model, "llama.cpp could not load the file"
    try:
        theirs = llama_cpp_logits(theirs_model, ids)
    finally:
        lc.llama_model_free(theirs_model)
    with torch.no_grad():
        mine = ours(torch.tensor([ids])).logits[0]
    assert (mine - theirs).abs().max().item() <= 0.02 * mine.std().item()
