"""GGUF export (`save_gguf`, `tformer convert --to gguf`): the file `tformer.load` reads back
gives the exported model's logits -- exactly for f32, and for f16/q8_0/q4_1 exactly those of
the model whose weights went through the same quantise -> dequantise round trip, computed
independently here with `gguf.quants` -- and the tokenizer and chat template come back too.
The models are tiny random decoders with a small byte-level BPE vocabulary trained here (SmolLM2's
49k-token one takes seconds to parse, so only its own test uses it); llama.cpp's reading of
exported files is `test_gguf_export_llama_cpp.py`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

import tformer  # noqa: E402
from tformer import ModelConfig  # noqa: E402
from tformer.assets import smollm2_gguf  # noqa: E402
from tformer.cli import main  # noqa: E402
from tformer.commands.convert import GGUF_TYPES  # noqa: E402
from tformer.errors import InputError  # noqa: E402
from tformer.models import TformerModel, build_model  # noqa: E402
from tformer.pretrained import gguf_export  # noqa: E402
from tformer.pretrained.gguf_export import FILE_TYPES, save_gguf  # noqa: E402
from tformer.pretrained.gguf_file import load_gguf_tokenizer  # noqa: E402
from tformer.pretrained.gguf_layout import (  # noqa: E402
    ARCHITECTURES,
    TOKEN_ROLES,
)
from tformer.tokenizer import Tokenizer  # noqa: E402

TINY = {  # a Llama-shaped decoder; more rows than the tokenizer has tokens (padded)
    "arch": "decoder", "vocab_size": 320, "d_model": 64, "n_heads": 4, "n_kv_heads": 2,
    "n_layers": 2, "d_ff": 128, "max_seq_len": 256, "positional": "rotary", "norm": "rmsnorm",
    "norm_position": "pre", "activation": "swiglu", "dropout": 0.0, "bias": False,
    "tie_embeddings": False, "rope_theta": 100000.0, "pad_id": 0, "bos_id": 1, "eos_id": 2,
}  # fmt: skip
VARIANTS = {  # name -> ModelConfig changes; the GGUF architecture each becomes
    "llama": {},
    "llama-tied": {"tie_embeddings": True},
    "llama-linear-rope": {"rope_scaling": "linear", "rope_factor": 2.0},
    "llama3-rope": {"rope_scaling": "llama3", "rope_factor": 8.0, "rope_original_max_seq_len": 256},
    "llama-biases": {"bias": True},  # all attention and MLP projections
    "llama-attention-bias": {"attention_bias": True},
    "qwen2": {"qkv_bias": True},
    "qwen3": {"qk_norm": True, "head_dim": 32},
}
TEXTS = ["Hello, world!", "numbers 1234567 and   spaces\n\n", "<|im_start|>user\nHi<|im_end|>", ""]
CHAT = [{"role": "user", "content": "What is 2 + 2?"}]
CHAT_TEMPLATE = "{% for m in messages %}[BOS]{{ m['role'] }}: {{ m['content'] }}[EOS]{% endfor %}"


def small_bpe(folder: Path) -> Tokenizer:
    """Byte-level BPE with [PAD]=0, [BOS]=1, [EOS]=2 ... and a chat template."""
    corpus = folder / "text.txt"
    corpus.write_text("the cat sat on the mat; the dog sat on the log. 1234 5678\n" * 20)
    tokenizer = Tokenizer.train_bpe([corpus], vocab_size=300)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def smollm2_tokenizer() -> Tokenizer:
    """SmolLM2's tokenizer alone (the GGUF's metadata, no weights), or skip the test."""
    try:
        return load_gguf_tokenizer(smollm2_gguf())
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return small_bpe(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def smol_tokenizer() -> Tokenizer:
    return smollm2_tokenizer()


def tiny_model(**changes: object) -> TformerModel:
    """A random decoder with every parameter perturbed, so a misplaced tensor shows."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**TINY, **changes})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _round_trip(w: np.ndarray, kind: str) -> np.ndarray:
    """What a `kind` GGUF tensor gives back: vectors are kept F32, matrices stored as `kind`."""
    if w.ndim < 2 or kind == "F32":
        return w
    if kind == "F16":
        return w.astype(np.float16).astype(np.float32)
    qtype = gguf.GGMLQuantizationType[kind]
    return gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype)


def _reference(model: TformerModel, kind: str) -> TformerModel:
    """`model` with each weight replaced by its round trip (quantisation is per row, so
    llama.cpp's reordering of q/k rows does not change it)."""
    reference = build_model(model.config).eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.from_numpy(_round_trip(p.numpy(), kind)))
    return reference


def _logits(model: TformerModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def _computed(config: ModelConfig) -> dict[str, object]:
    """The settings that change outputs, each in its derived form (head_dim=None -> 16)."""
    derived = {"head_dim": "attention_head_dim", "n_kv_heads": "kv_heads", "head": "task_head"}
    skipped = {"dropout", "attention_dropout", "attention_bias", "qkv_bias", "norm_eps"}
    return {
        f.name: getattr(config, derived.get(f.name, f.name))
        for f in dataclasses.fields(config)
        if f.name not in skipped
    } | {"use_qkv_bias": config.use_qkv_bias, "use_attention_bias": config.use_attention_bias}


@pytest.mark.parametrize("variant", VARIANTS)
def test_f32_export_loads_back_with_identical_logits_config_and_tokenizer(
    tmp_path: Path, bpe: Tokenizer, variant: str
) -> None:
    model = tiny_model(**VARIANTS[variant])
    path = save_gguf(model, tmp_path / "tiny.gguf", bpe, file_type="f32")
    back, tokenizer = tformer.load(path)
    ids = torch.randint(0, TINY["vocab_size"], (2, 12))
    assert torch.equal(_logits(back, ids), _logits(model, ids))
    assert _computed(back.config) == _computed(model.config)
    assert back.config.norm_eps == pytest.approx(model.config.norm_eps)  # stored as float32
    _assert_same_tokenizer(tokenizer, bpe)


def _assert_same_tokenizer(tokenizer: Tokenizer, expected: Tokenizer) -> None:
    for text in [*TEXTS, "the cat [EOS] 42"]:
        ids = tokenizer.encode(text)
        assert ids == expected.encode(text), text
        assert tokenizer.decode(ids) == expected.decode(ids), text
    roles = {r: t for r, t in expected.special_tokens.items() if r in TOKEN_ROLES}
    assert tokenizer.special_tokens == roles  # GGUF names only these roles
    assert tokenizer.apply_chat_template(CHAT) == expected.apply_chat_template(CHAT)


def test_smollm2_tokenizer_and_chat_template_survive_export(
    tmp_path: Path, smol_tokenizer: Tokenizer
) -> None:
    model = tiny_model(vocab_size=49152)
    _, tokenizer = tformer.load(save_gguf(model, tmp_path / "smol.gguf", smol_tokenizer))
    _assert_same_tokenizer(tokenizer, smol_tokenizer)


@pytest.mark.parametrize("file_type", ["f16", "q8_0", "q4_1"])
@pytest.mark.parametrize("variant", ["llama", "qwen2", "qwen3"])
def test_quantised_export_matches_the_round_tripped_weights(
    tmp_path: Path, bpe: Tokenizer, file_type: str, variant: str
) -> None:
    model = tiny_model(**VARIANTS[variant])
    path = save_gguf(model, tmp_path / "tiny.gguf", bpe, file_type=file_type)
    back, _ = tformer.load(path)
    reference = _reference(model, FILE_TYPES[file_type][0])
    ids = torch.randint(0, TINY["vocab_size"], (2, 12))
    assert torch.equal(_logits(back, ids), _logits(reference, ids))
    error = (_logits(back, ids) - _logits(model, ids)).abs().max().item()
    spread = _logits(model, ids).std().item()
    assert 0 < error < {"f16": 0.02, "q8_0": 0.2, "q4_1": 2.0}[file_type] * spread


def test_file_types_and_names_follow_the_gguf_package() -> None:
    assert tuple(FILE_TYPES) == GGUF_TYPES  # the command lists the types without importing
    for kind, file_type in FILE_TYPES.values():
        assert gguf.GGMLQuantizationType[kind].name == kind
        assert gguf.LlamaFileType[file_type].name == file_type
    stems = {name.replace("{bid}", "{i}") for name in gguf.TENSOR_NAMES.values()}
    llm_keys = {
        value.removeprefix("{arch}.")
        for group in (gguf.Keys.LLM, gguf.Keys.Attention, gguf.Keys.Rope)
        for value in vars(group).values()
        if isinstance(value, str) and value.startswith("{arch}.")
    }
    for arch in ARCHITECTURES:  # the tables import reads with (export: the decoders')
        assert {ours for ours, _ in arch.tensor_names} <= stems, arch.name
        assert set(arch.config_keys) <= llm_keys, arch.name
        assert arch.name in gguf.MODEL_ARCH_NAMES.values()
    tokenizer_keys = {v for v in vars(gguf.Keys.Tokenizer).values() if isinstance(v, str)}
    assert {f"tokenizer.ggml.{key}" for key in TOKEN_ROLES.values()} <= tokenizer_keys


def test_a_failed_export_leaves_the_previous_file_and_no_partial_one(
    tmp_path: Path, bpe: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.gguf"
    target.write_bytes(b"previous")

    def fail(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf_export, "_add_tensor", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_gguf(tiny_model(), target, bpe)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]


def test_unsupported_models_types_and_tokenizers_are_named(tmp_path: Path, bpe: Tokenizer) -> None:
    gpt2 = build_model(
        ModelConfig(vocab_size=320, d_model=32, n_heads=2, n_layers=1, d_ff=64,
                    positional="learned", norm_position="pre", activation="gelu_tanh")
    )  # fmt: skip
    with pytest.raises(InputError, match=r"writes llama, qwen2, qwen3 models; .* gpt2 model"):
        save_gguf(gpt2, tmp_path / "a.gguf", bpe)
    with pytest.raises(InputError, match="type 'q5_k' is not supported; supported: f32, f16"):
        save_gguf(tiny_model(), tmp_path / "a.gguf", bpe, file_type="q5_k")
    qwen2_llama3 = tiny_model(
        qkv_bias=True, rope_scaling="llama3", rope_factor=8.0, rope_original_max_seq_len=64
    )  # llama.cpp reads Llama 3's rope_freqs tensor for "llama" only
    with pytest.raises(InputError, match=r"rope scaling 'llama3' for llama\.cpp's 'qwen2' is not"):
        save_gguf(qwen2_llama3, tmp_path / "a.gguf", bpe)
    qwen3_bias = tiny_model(qk_norm=True, attention_bias=True)
    with pytest.raises(InputError, match="'qwen3' models have no bias on attn_q"):
        save_gguf(qwen3_bias, tmp_path / "a.gguf", bpe)
    corpus = tmp_path / "text.txt"
    corpus.write_text("some text to learn characters from")
    chars = Tokenizer.train_char([corpus])
    with pytest.raises(InputError, match=r"byte-level BPE tokenizers .* this one is WordLevel"):
        save_gguf(tiny_model(), tmp_path / "a.gguf", chars)
    assert not list(tmp_path.glob("*.gguf"))


def test_convert_command_writes_a_gguf_of_the_chosen_type(
    tmp_path: Path, bpe: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tiny_model().save_pretrained(tmp_path / "ckpt", bpe)
    out = tmp_path / "tiny.q8_0.gguf"
    assert main(["convert", str(source), str(out), "--to", "gguf", "--type", "q8_0"]) == 0
    assert "gguf q8_0 format" in capsys.readouterr().out
    reader = gguf.GGUFReader(str(out))
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["blk.0.attn_norm.weight"] == "F32"
    assert main(["convert", str(source), str(tmp_path / "hf"), "--type", "q8_0"]) == 2
    assert "tformer: error: --type applies to --to gguf only" in capsys.readouterr().err
