"""GGUF import on small files written here the way llama.cpp writes them: q/k rows permuted for
its rotary layout, tensors quantised Q4_0/Q4_1/Q8_0/F16. The reference is a `transformers`
Llama holding the same quantise->dequantise round trip of the original (unpermuted) weights,
so tformer's un-permutation and name map are checked against weights it never saw."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

import tformer  # noqa: E402
from tformer import CheckpointError  # noqa: E402

Q = gguf.GGMLQuantizationType
TOKENS = [chr(c) for c in range(ord("a"), ord("a") + 26)] + ["ab", "<|im_start|>", "<|im_end|>"]
TOKENS += [f"<extra_{i}>" for i in range(64 - len(TOKENS))]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)
NAMES = {  # Hugging Face -> llama.cpp, as its converter names them
    "model.embed_tokens.weight": ("token_embd.weight", Q.Q8_0),
    "model.norm.weight": ("output_norm.weight", Q.F32),
    "lm_head.weight": ("output.weight", Q.F16),
    "input_layernorm.weight": ("attn_norm.weight", Q.F32),
    "self_attn.q_proj.weight": ("attn_q.weight", Q.Q4_0),
    "self_attn.k_proj.weight": ("attn_k.weight", Q.Q4_1),
    "self_attn.v_proj.weight": ("attn_v.weight", Q.Q8_0),
    "self_attn.o_proj.weight": ("attn_output.weight", Q.F16),
    "post_attention_layernorm.weight": ("ffn_norm.weight", Q.F32),
    "mlp.gate_proj.weight": ("ffn_gate.weight", Q.Q4_1),
    "mlp.up_proj.weight": ("ffn_up.weight", Q.Q4_0),
    "mlp.down_proj.weight": ("ffn_down.weight", Q.Q8_0),
}


def _llama(vocab_size: int = 64) -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=96, max_position_embeddings=128,
        rope_theta=10000.0, rms_norm_eps=1e-5, bos_token_id=27, eos_token_id=28,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf reorder of q/k rows (rotate-half -> interleaved pairs)."""
    return (
        w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, w.shape[1])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _round_trip(w: np.ndarray, kind: Q) -> np.ndarray:
    if kind == Q.F32:
        return w
    if kind == Q.F16:
        return w.astype(np.float16).astype(np.float32)
    return gguf.quants.dequantize(gguf.quants.quantize(w, kind), kind)


def _split(hf_name: str) -> tuple[str | None, str]:
    if hf_name.startswith("model.layers."):
        _, _, i, rest = hf_name.split(".", 3)
        return i, rest
    return None, hf_name


def _byte_level_vocabulary(writer: gguf.GGUFWriter) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(TOKENS)
    writer.add_token_merges(["a b"])
    writer.add_token_types([3 if t.startswith("<|") else 1 for t in TOKENS])
    writer.add_bos_token_id(27)
    writer.add_eos_token_id(28)
    writer.add_chat_template(TEMPLATE)


def _write_gguf(
    path: Path,
    model: torch.nn.Module,
    arch: str = "llama",
    override: Q | None = None,
    vocabulary: Callable[[gguf.GGUFWriter], None] = _byte_level_vocabulary,
) -> None:
    c = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    vocabulary(writer)
    heads = {
        "self_attn.q_proj.weight": c.num_attention_heads,
        "self_attn.k_proj.weight": c.num_key_value_heads,
    }
    for hf_name, tensor in model.state_dict().items():
        layer, rest = _split(hf_name)
        name, kind = NAMES[rest]
        kind = override if override is not None and rest == "self_attn.v_proj.weight" else kind
        data = tensor.numpy()
        if rest in heads:
            data = _llama_cpp_permute(data, heads[rest])
        name = f"blk.{layer}.{name}" if layer is not None else name
        if kind == Q.F32:
            writer.add_tensor(name, data)
        elif kind == Q.F16:
            writer.add_tensor(name, data.astype(np.float16))
        elif kind in (Q.Q4_0, Q.Q4_1, Q.Q8_0):
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        else:  # a type tformer cannot read: only its byte size has to be right
            nbytes = gguf.quants.quant_shape_to_byte_shape(data.shape, kind)
            writer.add_tensor(name, np.zeros(nbytes, dtype=np.uint8), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _reference(model: torch.nn.Module) -> torch.nn.Module:
    """The same Llama with every weight replaced by its quantise -> dequantise round trip."""
    with torch.no_grad():
        for hf_name, tensor in model.state_dict().items():
            kind = NAMES[_split(hf_name)[1]][1]
            tensor.copy_(torch.from_numpy(_round_trip(tensor.numpy(), kind)))
    return model


def test_quantised_gguf_matches_transformers_with_dequantised_weights(tmp_path: Path) -> None:
    model = _llama()
    _write_gguf(tmp_path / "tiny.gguf", model)
    ours, _ = tformer.load(tmp_path / "tiny.gguf")
    reference = _reference(model)
    ids = torch.randint(0, 64, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits[mask.bool()]
        b = reference(input_ids=ids, attention_mask=mask).logits[mask.bool()]
    assert b.std() > 0.1
    assert (a - b).abs().max().item() <= 1e-4


def test_gguf_tokenizer_has_vocabulary_specials_and_chat_template(tmp_path: Path) -> None:
    _write_gguf(tmp_path / "tiny.gguf", _llama())
    model, tokenizer = tformer.load(tmp_path / "tiny.gguf")
    assert tokenizer is not None
    assert tokenizer.encode("abc<|im_end|>") == [26, 2, 28]  # "ab" merged, control token whole
    assert (tokenizer.token_id("bos"), tokenizer.token_id("eos")) == (27, 28)
    assert (model.config.bos_id, model.config.eos_id) == (27, 28)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    assert chat == "<|im_start|>user\nhi<|im_end|>\n"


def test_unsupported_quantisation_names_tensor_and_type(tmp_path: Path) -> None:
    _write_gguf(tmp_path / "q81.gguf", _llama(), override=Q.Q8_1)
    with pytest.raises(
        CheckpointError, match=r"'blk\.0\.attn_v\.weight' \(shape \(32, 64\)\) is stored as Q8_1"
    ):
        tformer.load(tmp_path / "q81.gguf")


def test_non_llama_gguf_is_refused(tmp_path: Path) -> None:
    _write_gguf(tmp_path / "other.gguf", _llama(), arch="falcon")
    with pytest.raises(CheckpointError, match="GGUF architecture 'falcon' is not supported"):
        tformer.load(tmp_path / "other.gguf")


SPM_PIECES = ["▁", "h", "e", "l", "o", "w", "r", "d", "t", "a", "n", "he", "ll", "▁h", "▁he",
              "llo", "▁hello", "▁w", "or", "▁wor", "ld", "▁world", "th", "▁the", "an", "▁an"]  # fmt: skip
SPM_TOKENS = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *SPM_PIECES]


def _sentencepiece_vocabulary(writer: gguf.GGUFWriter) -> None:
    """A Llama-style SentencePiece vocabulary: no merges, scores give the merge order."""
    writer.add_tokenizer_model("llama")
    writer.add_token_list(SPM_TOKENS)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(SPM_PIECES))])
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(SPM_PIECES))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)


def test_sentencepiece_gguf_tokenizer_matches_transformers(tmp_path: Path) -> None:
    _write_gguf(
        tmp_path / "spm.gguf", _llama(len(SPM_TOKENS)), vocabulary=_sentencepiece_vocabulary
    )
    _, tokenizer = tformer.load(tmp_path / "spm.gguf")
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    texts = ["hello world", "  hello   world ", "the hello an", "héllo 🙂 wörld", "", "he</s>llo"]
    for text in texts:
        ids = tokenizer.encode(text)
        assert ids == reference(text)["input_ids"], text
        assert tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=True), text
    assert tokenizer.encode("hello")[:2] == [1, SPM_TOKENS.index("▁hello")]  # BOS added
