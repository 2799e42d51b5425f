"""llama.cpp reads what `save_gguf` writes: every exported variant loads in llama-cpp-python and
gives tformer's logits for the same file, text is tokenised as tformer does it, the chat
template comes along, and greedy decoding of SmolLM2 exported as f16 is token-identical.

The reference is always tformer decoding the same file (its dequantised weights). llama.cpp
multiplies f16 weights with f16-rounded activations and q8_0 weights with activations
quantised to 8 bits (blocks of 32), so its logits differ by its own rounding: about 1% of
their spread for f16 and 5-20% for q8_0 -- as much as for the original SmolLM2 Q4_1 file,
1.3 logits. That is why greedy decoding is compared on the real model (wide gaps between
the best two tokens, unlike a random one) and, for q8_0, only up to a step whose gap llama.cpp's
rounding could close. llama.cpp is driven through its C API, the greedy decoder being the
benchmarks' (`benchmarks/llamacpp.py`: one batch of sequences).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")
lc = pytest.importorskip("llama_cpp")

import tformer  # noqa: E402
from benchmarks.llamacpp import llama_cpp_decoder  # noqa: E402
from test_gguf_export import (  # noqa: E402
    TEXTS,
    VARIANTS,
    small_bpe,
    smollm2_tokenizer,
    tiny_model,
)
from tformer.assets import smollm2_gguf  # noqa: E402
from tformer.generation import generate  # noqa: E402
from tformer.models import TformerModel  # noqa: E402
from tformer.pretrained import save_gguf  # noqa: E402
from tformer.pretrained.gguf_file import (  # noqa: E402
    load_gguf,
    load_gguf_tokenizer,
    load_gguf_vocabulary,
)
from tformer.pretrained.tokenizers import tokenizer_from_gguf  # noqa: E402
from tformer.tokenizer import Tokenizer  # noqa: E402

# max |llama.cpp - tformer| logit over a sequence, as a fraction of the logits' std
LOGIT_TOLERANCE = {"f16": 0.02, "q8_0": 0.3}
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, 42 cats"]
NEW_TOKENS = 24
MORE_TEXTS = [*TEXTS, "  leading and    inner   whitespace\t\ttabs", "emoji 🙂 café 日本語"]


@pytest.fixture(scope="module", autouse=True)
def _backend() -> None:
    lc.llama_backend_init()


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return small_bpe(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def smol_tokenizer() -> Tokenizer:
    return smollm2_tokenizer()


@pytest.fixture
def llama_cpp_model(request: pytest.FixtureRequest) -> Iterator[Any]:
    """`open(path, vocab_only)` -> llama.cpp's model of a file, freed after the test."""
    models = []

    def open_model(path: Path, vocab_only: bool = False) -> Any:
        params = lc.llama_model_default_params()
        params.vocab_only = vocab_only
        model = lc.llama_model_load_from_file(str(path).encode(), params)
        assert model, f"llama.cpp could not load {path}"
        models.append(model)
        return model

    yield open_model
    for model in models:
        lc.llama_model_free(model)


def llama_cpp_logits(model: Any, ids: list[int]) -> torch.Tensor:
    """llama.cpp's logits (T, V) at every position of `ids`, decoded as one sequence."""
    params = lc.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = max(64, len(ids))
    params.n_threads = params.n_threads_batch = torch.get_num_threads()
    context = lc.llama_init_from_model(model, params)
    batch = lc.llama_batch_init(len(ids), 0, 1)
    try:
        batch.n_tokens = len(ids)
        for i, token in enumerate(ids):
            batch.token[i], batch.pos[i], batch.logits[i] = token, i, True
            batch.seq_id[i][0], batch.n_seq_id[i] = 0, 1
        assert lc.llama_decode(context, batch) == 0
        n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
        rows = [lc.llama_get_logits_ith(context, i) for i in range(len(ids))]
        return torch.from_numpy(np.stack([np.ctypeslib.as_array(r, (n_vocab,)) for r in rows]))
    finally:
        lc.llama_batch_free(batch)
        lc.llama_free(context)


def _tformer_logits(model: TformerModel, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("kind", ["f16", "q8_0"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_llama_cpp_gives_tformers_logits_for_every_exported_variant(
    tmp_path: Path, bpe: Tokenizer, llama_cpp_model: Any, variant: str, kind: str
) -> None:
    path = save_gguf(tiny_model(**VARIANTS[variant]), tmp_path / "t.gguf", bpe, file_type=kind)
    back, _ = tformer.load(path)
    ids = torch.randint(0, bpe.vocab_size, (40,)).tolist()  # rotary reaches position 39
    ours = _tformer_logits(back, ids)
    theirs = llama_cpp_logits(llama_cpp_model(path), ids)
    assert theirs.shape == ours.shape
    error = (theirs - ours).abs().max().item()
    assert error < LOGIT_TOLERANCE[kind] * ours.std().item(), (error, ours.std().item())


def test_llama_cpp_tokenises_like_tformer_and_reads_the_chat_template(
    tmp_path: Path, bpe: Tokenizer, smol_tokenizer: Tokenizer, llama_cpp_model: Any
) -> None:
    for tokenizer, vocab_size in ((bpe, 320), (smol_tokenizer, 49152)):
        path = save_gguf(tiny_model(vocab_size=vocab_size), tmp_path / "t.gguf", tokenizer)
        model = llama_cpp_model(path, vocab_only=True)
        vocab = lc.llama_model_get_vocab(model)
        for text in [*MORE_TEXTS, "the cat [EOS] 42"]:
            assert _llama_cpp_tokens(vocab, text) == tokenizer.encode(text), text
        assert lc.llama_model_chat_template(model, None).decode() == tokenizer.chat_template
        assert lc.llama_vocab_n_tokens(vocab) == vocab_size
        assert lc.llama_vocab_bos(vocab) == tokenizer.token_id("bos")
        assert lc.llama_vocab_eos(vocab) == tokenizer.token_id("eos")


# digits in runs of 1-5, contractions in both cases, newline and space runs, non-Latin digits
SPLIT_TEXTS = [
    "In 2024, 42 cats paid $1,234.56 for 7 fish!",
    "I'M here; you'RE not. They'll've gone\n\n\nok",
    "x  \n  y\t\tz   end  ",
    "١٢٣ and ４５ are digits too",
]


@pytest.mark.parametrize("pre", ["smollm", "llama-bpe", "qwen2", "gpt-2"])
def test_llama_cpp_splits_text_as_tformer_for_each_pre_tokenizer(
    tmp_path: Path, pre: str, llama_cpp_model: Any
) -> None:
    """SmolLM2's vocabulary under each of llama.cpp's split rules: exported with them (the
    file names them in tokenizer.ggml.pre), llama.cpp tokenises as tformer does; the rules
    differ on these texts, so each is checked, not the same one four times."""
    vocabulary = dataclasses.replace(load_gguf_vocabulary(smollm2_gguf()), pre=pre)
    tokenizer = tokenizer_from_gguf(vocabulary)
    path = save_gguf(tiny_model(vocab_size=49152), tmp_path / "t.gguf", tokenizer)
    assert load_gguf_vocabulary(path).pre == pre
    vocab = lc.llama_model_get_vocab(llama_cpp_model(path, vocab_only=True))
    for text in SPLIT_TEXTS:
        assert _llama_cpp_tokens(vocab, text) == tokenizer.encode(text), text


def test_smollm2s_own_file_splits_digits_as_llama_cpp_does(llama_cpp_model: Any) -> None:
    """The file as the package ships it ("smollm": every digit its own piece)."""
    tokenizer = load_gguf_tokenizer(smollm2_gguf())
    vocab = lc.llama_model_get_vocab(llama_cpp_model(smollm2_gguf(), vocab_only=True))
    for text in SPLIT_TEXTS:
        assert _llama_cpp_tokens(vocab, text) == tokenizer.encode(text), text
    assert [tokenizer.decode([i]) for i in tokenizer.encode("2024")] == ["2", "0", "2", "4"]


def _llama_cpp_tokens(vocab: Any, text: str) -> list[int]:
    """llama_tokenize with special tokens added and parsed, as tformer's `encode` does."""
    data = text.encode()
    room = len(data) + 8
    out = (lc.llama_token * room)()
    n = lc.llama_tokenize(vocab, data, len(data), out, room, True, True)
    assert n >= 0, f"llama_tokenize returned {n}"
    return list(out[:n])


@pytest.fixture(scope="module")
def smollm2() -> tuple[TformerModel, Tokenizer]:
    try:
        return tformer.load(smollm2_gguf(), require_tokenizer=True)
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["f16", "q8_0"])
def test_llama_cpp_greedy_decoding_of_exported_smollm2_matches_tformer(
    tmp_path: Path, smollm2: tuple[TformerModel, Tokenizer], llama_cpp_model: Any, kind: str
) -> None:
    model, tokenizer = smollm2
    path = save_gguf(model, tmp_path / f"smollm2.{kind}.gguf", tokenizer, file_type=kind)
    back, _ = load_gguf(path)  # tformer on the file's dequantised weights (no cache entry)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}])
    prompts = [tokenizer.encode(p) for p in [*PROMPTS, chat]]
    theirs = llama_cpp_decoder(path, prompts, NEW_TOKENS)(NEW_TOKENS)
    weights = llama_cpp_model(path)
    for row, prompt in enumerate(prompts):
        new = generate(back, torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, eos_token_ids=())
        sequence = prompt + new[0].tolist()
        ours = _tformer_logits(back, sequence)[len(prompt) - 1 : -1]  # (NEW_TOKENS, V)
        rounding = (llama_cpp_logits(weights, sequence)[len(prompt) - 1 : -1] - ours).abs()
        gaps = ours.topk(2, dim=-1).values.diff(dim=-1).abs()[:, 0]
        differ = (theirs[row] != new[0]).nonzero()
        if kind == "f16":
            assert differ.numel() == 0, f"prompt {row}: llama.cpp differs from step {differ[0]}"
        elif differ.numel():  # the first differing step must be one llama.cpp's rounding ties
            step = differ[0].item()
            assert gaps[step] < 2 * rounding[step].max(), (row, step, gaps[step])
