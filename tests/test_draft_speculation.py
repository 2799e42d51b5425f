"""Speculative decoding with a draft model is plain greedy decoding, in fewer passes.

References: transformers' greedy `generate()` on the same random Llama (with and without
its own assisted generation), and our plain greedy loop for batches, EOS and encoder-decoders.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_generation import MODELS, VOCAB, tiny
from test_prompt_lookup import count_forward_calls
from tformer.errors import ConfigError, InputError
from tformer.generation import generate, left_pad, stream

transformers = pytest.importorskip("transformers")


def _llama(layers: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def _load(model: torch.nn.Module, path: Path):
    import tformer

    model.save_pretrained(path)
    return tformer.load(path)[0]


def test_a_draft_models_guesses_leave_greedy_decoding_as_transformers_decodes(
    tmp_path: Path,
) -> None:
    """A different (1-layer) random draft: few guesses hold, the output is still greedy's."""
    hf_model, hf_draft = _llama(2, seed=0), _llama(1, seed=1)
    model, draft = _load(hf_model, tmp_path / "m"), _load(hf_draft, tmp_path / "d")
    prompt = torch.randint(3, VOCAB, (1, 7), generator=torch.Generator().manual_seed(3))
    ours = generate(model, prompt, max_new_tokens=16, eos_token_ids=(), draft_model=draft,
                    draft_tokens=3)  # fmt: skip
    with torch.no_grad():
        kwargs = dict(max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)
        plain = hf_model.generate(prompt, **kwargs)[:, 7:]
        assisted = hf_model.generate(prompt, assistant_model=hf_draft, **kwargs)[:, 7:]
    assert ours.tolist() == plain.tolist() == assisted.tolist()


def test_the_model_as_its_own_draft_settles_every_guess(tmp_path: Path) -> None:
    """Every guess holds: 1 + 3 tokens per pass of the model instead of one."""
    model = tiny("decoder", positional="rotary", norm="rmsnorm", norm_position="pre")
    draft = tiny("decoder", positional="rotary", norm="rmsnorm", norm_position="pre")
    prompt = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(0))
    plain = generate(model, prompt, max_new_tokens=13, eos_token_ids=())
    calls = count_forward_calls(model)
    ours = generate(model, prompt, max_new_tokens=13, eos_token_ids=(), draft_model=draft,
                    draft_tokens=3)  # fmt: skip
    assert ours.tolist() == plain.tolist()
    assert calls[0] == 1 + 3  # the prompt, then passes settling 4 + 4 + 4 tokens after the first


@pytest.mark.parametrize(("arch", "name", "overrides"), MODELS, ids=[m[1] for m in MODELS])
def test_draft_speculation_is_plain_greedy_for_padded_batches_with_eos(arch, name, overrides):
    """Left-padded rows of different lengths, EOS ending rows at different steps, a draft of
    another seed: token for token the plain greedy loop's, whole and streamed."""
    model = tiny(arch, **overrides)
    draft = tiny(arch, **{**overrides, "n_layers": 1})
    g = torch.Generator().manual_seed(5)
    rows = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (6, 3, 8)]
    ids, mask = left_pad(rows, pad_id=0)
    options = dict(max_new_tokens=20, eos_token_ids=(7,))
    plain = generate(model, ids, mask, **options)
    ours = generate(model, ids, mask, draft_model=draft, draft_tokens=4, **options)
    assert ours.tolist() == plain.tolist()
    streamed = torch.stack(list(stream(model, ids, mask, draft_model=draft, draft_tokens=4,
                                       **options)), dim=1)  # fmt: skip
    assert streamed.tolist() == plain.tolist()


def test_draft_guesses_stop_at_the_drafts_own_context() -> None:
    """A draft with a shorter context stops guessing; decoding goes on, still exact."""
    model = tiny("decoder", positional="rotary", norm="rmsnorm", norm_position="pre")
    draft = tiny("decoder", positional="rotary", norm="rmsnorm", norm_position="pre",
                 max_seq_len=12)  # fmt: skip
    prompt = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(2))
    plain = generate(model, prompt, max_new_tokens=20, eos_token_ids=())
    ours = generate(model, prompt, max_new_tokens=20, eos_token_ids=(), draft_model=draft,
                    draft_tokens=4)  # fmt: skip
    assert ours.tolist() == plain.tolist()


def test_draft_options_that_cannot_be_exact_or_do_not_fit_are_refused() -> None:
    model = tiny("decoder")
    prompt = torch.tensor([[3, 4, 5]])
    with pytest.raises(InputError, match="vocabulary of 50 tokens"):
        generate(model, prompt, max_new_tokens=4, draft_model=tiny("decoder", vocab_size=50),
                 draft_tokens=2)  # fmt: skip
    with pytest.raises(InputError, match="arch='encoder-decoder'"):
        generate(model, prompt, max_new_tokens=4, draft_model=tiny("encoder-decoder"),
                 draft_tokens=2)  # fmt: skip
    with pytest.raises(InputError, match="needs a draft_model"):
        generate(model, prompt, max_new_tokens=4, draft_tokens=2)
    with pytest.raises(InputError, match="needs draft_tokens > 0"):
        generate(model, prompt, max_new_tokens=4, draft_model=tiny("decoder"))
    with pytest.raises(ConfigError, match="exact only for plain greedy"):
        generate(model, prompt, max_new_tokens=4, draft_model=tiny("decoder"), draft_tokens=2,
                 top_p=0.9)  # fmt: skip
    with pytest.raises(ConfigError, match="choose one way to speculate"):
        generate(model, prompt, max_new_tokens=4, draft_model=tiny("decoder"), draft_tokens=2,
                 prompt_lookup_tokens=2)  # fmt: skip
