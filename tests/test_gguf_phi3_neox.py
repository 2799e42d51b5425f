"""GGUF import of llama.cpp's `phi3` and `gptneox` architectures, on small files written here
as llama.cpp's converter writes them (Phi-3's fused qkv and gate/up kept; GPT-NeoX's per-head
q/k/v rows regrouped as all q, then k, then v). The reference is the `transformers` model
holding each weight's quantise -> dequantise round trip, so tformer's name map, key map and
q/k/v regrouping are checked against weights it never saw."""

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
from tformer.pretrained.gguf_layout import IMPORTED_KEYS, architecture  # noqa: E402

Q = gguf.GGMLQuantizationType
_IDS = {"bos_token_id": 27, "eos_token_id": 28, "pad_token_id": 0}
PHI3_NAMES = {  # Hugging Face -> llama.cpp, as its converter names them
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
NEOX_NAMES = {
    "gpt_neox.embed_in.weight": "token_embd.weight",
    "gpt_neox.final_layer_norm.weight": "output_norm.weight",
    "gpt_neox.final_layer_norm.bias": "output_norm.bias",
    "lm_head.weight": "output.weight",  # embed_out in files; transformers >= 5 names it so
    **{f"{hf}.{p}": f"{g}.{p}" for p in ("weight", "bias") for hf, g in (
        ("input_layernorm", "attn_norm"),
        ("attention.query_key_value", "attn_qkv"),
        ("attention.dense", "attn_output"),
        ("post_attention_layernorm", "ffn_norm"),
        ("mlp.dense_h_to_4h", "ffn_up"),
        ("mlp.dense_4h_to_h", "ffn_down"),
    )},
}  # fmt: skip


def _phi3() -> torch.nn.Module:
    """GQA 4/2, half of each head rotated, a 5-token window (llama.cpp's converter writes it)."""
    config = transformers.Phi3Config(
        vocab_size=len(TOKENS), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=96, max_position_embeddings=128,
        partial_rotary_factor=0.5, sliding_window=5, rms_norm_eps=1e-5, **_IDS,
    )  # fmt: skip
    torch.manual_seed(0)
    return randomise(transformers.Phi3ForCausalLM(config))


def _neox(parallel: bool = True) -> torch.nn.Module:
    config = transformers.GPTNeoXConfig(
        vocab_size=len(TOKENS), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=96, max_position_embeddings=128, rotary_pct=0.25,
        rotary_emb_base=5000.0, use_parallel_residual=parallel, **_IDS,
    )  # fmt: skip
    torch.manual_seed(0)
    return randomise(transformers.GPTNeoXForCausalLM(config))


def _gguf_name(hf_name: str, names: dict[str, str]) -> str:
    for prefix in ("model.layers.", "gpt_neox.layers."):
        if hf_name.startswith(prefix):
            layer, rest = hf_name.removeprefix(prefix).split(".", 1)
            return f"blk.{layer}.{names[rest]}"
    return names[hf_name]


def _concat_qkv(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's converter: GPT-NeoX's (head, q|k|v, ...) rows -> all q, all k, all v."""
    return w.reshape(n_heads, 3, -1, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)


def _write(path: Path, model: torch.nn.Module, kind: Q) -> dict[str, torch.Tensor]:
    """The GGUF file of `model` with its matrices stored as `kind` (norms and biases F32);
    returns the round-tripped weights under their Hugging Face names."""
    c = model.config
    neox = c.model_type == "gpt_neox"
    writer = gguf.GGUFWriter(str(path), "gptneox" if neox else "phi3")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    head_dim = c.hidden_size // c.num_attention_heads
    writer.add_rope_dimension_count(int(head_dim * c.rope_parameters["partial_rotary_factor"]))
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    if neox:
        writer.add_layer_norm_eps(c.layer_norm_eps)
        writer.add_parallel_residual(c.use_parallel_residual)
    else:
        writer.add_head_count_kv(c.num_key_value_heads)
        writer.add_layer_norm_rms_eps(c.rms_norm_eps)
        writer.add_sliding_window(c.sliding_window)
    _byte_level_vocabulary(writer)
    round_trip = {}
    for hf_name, tensor in model.state_dict().items():
        data = tensor.numpy()
        matrix = data.ndim == 2
        stored_kind = kind if matrix else Q.F32
        stored = _stored(data, stored_kind, np.random.default_rng(0))
        round_trip[hf_name] = torch.from_numpy(_dequantised(stored, stored_kind))
        if hf_name.endswith("query_key_value.weight") or hf_name.endswith("query_key_value.bias"):
            data = _concat_qkv(data, c.num_attention_heads)
        name = _gguf_name(hf_name, NEOX_NAMES if neox else PHI3_NAMES)
        writer.add_tensor(
            name, _stored(data, stored_kind, np.random.default_rng(0)), raw_dtype=stored_kind
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return round_trip


MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "phi3": _phi3,
    "gptneox-parallel": _neox,
    "gptneox-sequential": lambda: _neox(parallel=False),
}


@pytest.mark.parametrize("kind", [Q.F32, Q.Q8_0], ids=["f32", "q8_0"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_gguf_loads_with_the_logits_of_transformers(tmp_path: Path, name: str, kind: Q) -> None:
    """F32 exactly; Q8_0 exactly against the dequantised weights, and within 10% of the
    logits' spread against the unquantised model (every matrix, the embedding too, is
    rounded to 8 bits). 16 positions: past Phi-3's window."""
    model = MODELS[name]()
    round_trip = _write(tmp_path / "m.gguf", model, kind)
    ours, tokenizer = tformer.load(tmp_path / "m.gguf")
    assert tokenizer is not None and tokenizer.token_id("eos") == 28
    ids = torch.randint(0, len(TOKENS), (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    with torch.no_grad():
        original = model(input_ids=ids, attention_mask=mask).logits[mask.bool()]
        model.load_state_dict(round_trip)
        reference = model(input_ids=ids, attention_mask=mask).logits[mask.bool()]
        mine = ours(ids, attention_mask=mask).logits[mask.bool()]
    assert (mine - reference).abs().max().item() <= 1e-5
    assert (mine - original).abs().max().item() <= 0.1 * original.std().item()


def test_gguf_settings_arrive_in_the_config(tmp_path: Path) -> None:
    _write(tmp_path / "phi3.gguf", _phi3(), Q.F32)
    _write(tmp_path / "neox.gguf", _neox(parallel=False), Q.F32)
    phi3 = tformer.load(tmp_path / "phi3.gguf")[0].config
    neox = tformer.load(tmp_path / "neox.gguf")[0].config
    assert (phi3.sliding_window, phi3.rotary_dim, phi3.kv_heads) == (5, 8, 2)
    assert (neox.parallel_residual, neox.rotary_dim, neox.rope_theta) == (False, 4, 5000.0)


def test_import_only_architectures_use_llama_cpp_names() -> None:
    stems = {name.replace("{bid}", "{i}") for name in gguf.TENSOR_NAMES.values()}
    keys = gguf.Keys.Attention.SLIDING_WINDOW, gguf.Keys.Attention.LAYERNORM_EPS
    assert {f"{{arch}}.{key}" for key in IMPORTED_KEYS} == {
        *keys,
        gguf.Keys.LLM.USE_PARALLEL_RESIDUAL,
        gguf.Keys.LLM.ATTN_LOGIT_SOFTCAPPING,
        gguf.Keys.LLM.FINAL_LOGIT_SOFTCAPPING,
    }
    for arch in ("phi3", "gptneox", "gemma", "gemma2", "gemma3"):
        assert {ours for ours, _ in architecture(arch).tensor_names} <= stems
