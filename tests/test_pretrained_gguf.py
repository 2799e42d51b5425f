"""GGUF import on small files written here the way llama.cpp writes them: q/k rows permuted for
its rotary layout, tensors of every type tformer reads (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
Q5_1 quantised by `gguf`; Q2_K ... Q6_K as random valid blocks, which `gguf` cannot make
by quantising). The reference is a `transformers` Llama holding the weights the file stores
as `gguf.quants.dequantize` reads them, so tformer's reading, un-permutation and name map are
checked against weights it never saw."""

from __future__ import annotations

import math
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


def _llama(**settings: int) -> torch.nn.Module:
    """A random Llama (GQA 4/2) with every parameter perturbed, so a swapped or dropped
    tensor changes the logits; `settings` override the tiny default shape."""
    config = transformers.LlamaConfig(**{
        "vocab_size": 64, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 96, "max_position_embeddings": 128,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "bos_token_id": 27, "eos_token_id": 28,
        **settings,
    })  # fmt: skip
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


def _llama_cpp_rope_freqs(c: transformers.LlamaConfig) -> np.ndarray:
    """The divisors llama.cpp's converter (`LlamaModel.generate_extra_tensors`) writes for a
    llama3 rope table, computed its way."""
    rope = c.rope_parameters
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old_context = rope["original_max_position_embeddings"]
    freqs = 1.0 / rope["rope_theta"] ** (np.arange(0, c.head_dim, 2, dtype=np.float32) / c.head_dim)
    divisors = []
    for freq in freqs:
        wavelength = 2 * math.pi / freq
        if wavelength < old_context / high:
            divisors.append(1)
        elif wavelength > old_context / low:
            divisors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            divisors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(divisors, dtype=np.float32)


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


TYPES = (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1,
         Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)  # fmt: skip
# K-quant blocks `gguf.quants` cannot make by quantising: random bytes, but small finite
# float16 scales at their byte offsets (sized so the weights come out about 0.1).
K_QUANT_SCALES = {Q.Q2_K: (slice(-4, None), 2e-3), Q.Q3_K: (slice(-2, None), 8e-4),
                  Q.Q4_K: (slice(0, 4), 1e-4), Q.Q5_K: (slice(0, 4), 5e-5),
                  Q.Q6_K: (slice(-2, None), 3e-5)}  # fmt: skip


def _stored(w: np.ndarray, kind: Q, rng: np.random.Generator) -> np.ndarray:
    """`w` as the bytes (or floats) of a GGUF tensor of `kind`, (rows, per-row data)."""
    if kind == Q.F32:
        return w
    if kind == Q.F16:
        return w.astype(np.float16)
    if kind not in K_QUANT_SCALES:
        return gguf.quants.quantize(w, kind)
    block, size = gguf.GGML_QUANT_SIZES[kind]
    data = rng.integers(0, 256, (w.shape[0], w.shape[1] // block, size), dtype=np.uint8)
    where, scale = K_QUANT_SCALES[kind]
    n_scales = data[..., where].shape[-1] // 2
    scales = rng.uniform(scale / 2, scale, (*data.shape[:2], n_scales)).astype(np.float16)
    data[..., where] = scales.view(np.uint8)
    return data.reshape(w.shape[0], -1)


def _dequantised(stored: np.ndarray, kind: Q) -> np.ndarray:
    return (
        stored.astype(np.float32)
        if kind in (Q.F32, Q.F16)
        else gguf.quants.dequantize(stored, kind)
    )


def _write_gguf(
    path: Path,
    model: torch.nn.Module,
    arch: str = "llama",
    kind_of: Callable[[str, np.ndarray], Q] = lambda rest, _: NAMES[rest][1],
    vocabulary: Callable[[gguf.GGUFWriter], None] = _byte_level_vocabulary,
) -> dict[str, torch.Tensor]:
    """Write `model` as llama.cpp would, each tensor of type `kind_of(name in the block,
    weight)`; returns the weights the file holds (dequantised by `gguf`, in HF's order)."""
    c = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    vocabulary(writer)
    if c.rope_parameters["rope_type"] == "llama3":
        writer.add_tensor("rope_freqs.weight", _llama_cpp_rope_freqs(c))
    heads = {
        "self_attn.q_proj.weight": c.num_attention_heads,
        "self_attn.k_proj.weight": c.num_key_value_heads,
    }
    rng = np.random.default_rng(0)
    held = {}
    for hf_name, tensor in model.state_dict().items():
        layer, rest = _split(hf_name)
        name = NAMES[rest][0]
        name = f"blk.{layer}.{name}" if layer is not None else name
        kind = kind_of(rest, tensor.numpy())
        if kind in TYPES:
            data = _stored(tensor.numpy(), kind, rng)
            held[hf_name] = torch.from_numpy(_dequantised(data, kind).reshape(tensor.shape))
        else:  # a type tformer cannot read: only its byte size has to be right
            nbytes = gguf.quants.quant_shape_to_byte_shape(tensor.shape, kind)
            data = np.zeros(nbytes, dtype=np.uint8)
        if rest in heads:  # rows move whole: permuting the bytes permutes the weights
            data = _llama_cpp_permute(data, heads[rest])
        if kind in (Q.F32, Q.F16):
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return held


def _reference(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The same Llama holding `weights`, the ones the GGUF file stores."""
    model.load_state_dict(weights)
    return model


def _logits(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, hf: bool
) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask) if hf else model(ids, attention_mask=mask)
    return out.logits[mask.bool()]


def _batch(vocab_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, vocab_size, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return ids, mask


def test_quantised_gguf_matches_transformers_with_dequantised_weights(tmp_path: Path) -> None:
    model = _llama()
    held = _write_gguf(tmp_path / "tiny.gguf", model)
    ours, _ = tformer.load(tmp_path / "tiny.gguf")
    ids, mask = _batch()
    a, b = _logits(ours, ids, mask, hf=False), _logits(_reference(model, held), ids, mask, hf=True)
    assert b.std() > 0.1
    assert (a - b).abs().max().item() <= 1e-4


def _k_quant_llama() -> torch.nn.Module:
    """Rows of 256 and 512 features (whole K-quant blocks); o_proj's 128 do not fill one."""
    return _llama(hidden_size=256, intermediate_size=512, head_dim=32, num_attention_heads=4)


# Bounds on |logits - original model's logits| / |original logits| (Frobenius): what a type's
# rounding costs this random model (measured 0, 1.0e-3, 8e-3, 2.5e-2, 0.24, 0.20, 0.41, 0.37;
# Q8_0's weights themselves are within 0.6%). K-quant files hold random blocks, not a
# quantised model, so they are checked only against their own dequantised weights.
ROUNDING = {Q.F32: 0.0, Q.F16: 5e-3, Q.BF16: 2e-2, Q.Q8_0: 5e-2, Q.Q5_0: 0.5, Q.Q5_1: 0.5,
            Q.Q4_0: 0.8, Q.Q4_1: 0.8}  # fmt: skip


@pytest.mark.parametrize("kind", TYPES, ids=lambda kind: kind.name)
def test_every_tensor_type_loads_as_transformers_with_the_dequantised_weights(
    tmp_path: Path, kind: Q
) -> None:
    """Every matrix in `kind` (F16 where a row does not fill whole blocks, as llama.cpp's
    converter falls back), norms F32; the reference is gguf's own dequantisation."""
    model = _k_quant_llama()
    original = {n: t.clone() for n, t in model.state_dict().items()}
    block = gguf.GGML_QUANT_SIZES[kind][0]

    def kind_of(rest: str, w: np.ndarray) -> Q:
        return Q.F32 if w.ndim == 1 else kind if w.shape[1] % block == 0 else Q.F16

    held = _write_gguf(tmp_path / f"{kind.name}.gguf", model, kind_of=kind_of)
    ours, _ = tformer.load(tmp_path / f"{kind.name}.gguf")
    ids, mask = _batch()
    a = _logits(ours, ids, mask, hf=False)
    b = _logits(_reference(model, held), ids, mask, hf=True)
    assert b.std() > 0.1
    assert (a - b).abs().max().item() <= 1e-5
    if kind in ROUNDING:
        exact = _logits(_reference(model, original), ids, mask, hf=True)
        assert ((a - exact).norm() / exact.norm()).item() <= ROUNDING[kind]


# name -> (head_dim, rope table): Llama 3.2's (3 frequencies in the blended band), with one
# frequency there, and a table whose low_freq_factor is not 1 (2 frequencies there).
LLAMA3_ROPES = {
    "llama-3.2": (64, {"rope_theta": 500000.0, "factor": 32.0, "original_max_position_embeddings": 8192}),
    "one-band": (32, {"rope_theta": 500000.0, "factor": 8.0, "original_max_position_embeddings": 8192}),
    "short": (16, {"rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 2.0,
                   "high_freq_factor": 10.0, "original_max_position_embeddings": 130}),
}  # fmt: skip


@pytest.mark.parametrize("rope", LLAMA3_ROPES)
def test_llama3_rope_freqs_tensor_gives_transformers_llama3_rope_scaling(
    tmp_path: Path, rope: str
) -> None:
    """llama.cpp stores Llama 3's rope scaling only as the `rope_freqs` tensor."""
    head_dim, table = LLAMA3_ROPES[rope]
    table = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0, **table}
    model = _llama(head_dim=head_dim, rope_parameters=table, max_position_embeddings=16384)
    held = _write_gguf(tmp_path / "llama3.gguf", model, kind_of=lambda rest, _: Q.F32)
    ours, _ = tformer.load(tmp_path / "llama3.gguf")
    # the same divisors as the table with low_freq_factor 1 (the one import returns)
    low = table["low_freq_factor"]
    assert (ours.config.rope_scaling, ours.config.rope_factor) == ("llama3", table["factor"])
    assert ours.config.rope_original_max_seq_len == table["original_max_position_embeddings"] / low
    assert ours.config.rope_high_freq_factor == pytest.approx(table["high_freq_factor"] / low)
    ids, mask = _batch()
    a, b = _logits(ours, ids, mask, hf=False), _logits(_reference(model, held), ids, mask, hf=True)
    assert (a - b).abs().max().item() <= 1e-5
    if rope == "short":  # its scaling changes the first positions' logits (proves it applied)
        unscaled = _llama(head_dim=head_dim, rope_parameters={"rope_theta": 10000.0})
        assert (a - _logits(_reference(unscaled, held), ids, mask, hf=True)).abs().max() > 1e-2


def test_rope_freqs_that_no_llama3_scaling_gives_are_refused(tmp_path: Path) -> None:
    _, table = LLAMA3_ROPES["short"]
    table = {"rope_type": "llama3", **table}
    path = tmp_path / "odd.gguf"
    _write_gguf(path, _llama(head_dim=16, rope_parameters=table), kind_of=lambda rest, _: Q.F32)
    reader = gguf.GGUFReader(str(path), "r+")
    divisors = next(t for t in reader.tensors if t.name == "rope_freqs.weight").data
    divisors[:] = np.where(np.arange(len(divisors)) % 2, 1.0, 3.0)  # not monotone: no llama3
    divisors.flush()
    with pytest.raises(CheckpointError, match=r"rope_freqs\.weight holds frequency divisors"):
        tformer.load(path)


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
    def kind_of(rest: str, w: np.ndarray) -> Q:
        return Q.Q8_1 if rest == "self_attn.v_proj.weight" else NAMES[rest][1]

    _write_gguf(tmp_path / "q81.gguf", _llama(), kind_of=kind_of)
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
        tmp_path / "spm.gguf",
        _llama(vocab_size=len(SPM_TOKENS)),
        vocabulary=_sentencepiece_vocabulary,
    )
    _, tokenizer = tformer.load(tmp_path / "spm.gguf")
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    texts = ["hello world", "  hello   world ", "the hello an", "héllo 🙂 wörld", "", "he</s>llo"]
    for text in texts:
        ids = tokenizer.encode(text)
        assert ids == reference(text)["input_ids"], text
        assert tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=True), text
    assert tokenizer.encode("hello")[:2] == [1, SPM_TOKENS.index("▁hello")]  # BOS added
