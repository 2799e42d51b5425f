"""Prompt lookup (speculative decoding without a draft model) is plain greedy decoding, faster.

The reference is always the plain greedy loop (one forward pass per token) or a full forward
pass over the final sequence; proposals are built by hand where a case needs them.
"""

from __future__ import annotations

import pytest
import torch

from test_generation import DECODERS, MODELS, VOCAB, tiny
from tformer.errors import ConfigError
from tformer.generation import generate, left_pad, stream
from tformer.generation.config import GenerationConfig
from tformer.generation.lookup import lookup
from tformer.generation.state import DecodingState


def repetitive_prompts(count: int, seed: int) -> list[list[int]]:
    """Random prompts made of a few random phrases repeated in random order: n-grams recur."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        phrases = [torch.randint(3, VOCAB, (int(n),), generator=g).tolist() for n in (2, 3, 4)]
        order = torch.randint(0, 3, (4,), generator=g).tolist()
        rows.append([t for i in order for t in phrases[i]])
    return rows


def count_forward_calls(model: torch.nn.Module) -> list[int]:
    """A counter, increased at every forward pass of `model`'s decoder stack."""
    calls = [0]
    stack = model.decoder

    def hook(*_: object) -> None:
        calls[0] += 1

    stack.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([1, 2, 3, 9, 8, 1, 2, 3], [9, 8, 1]),  # the 3-gram (1, 2, 3) occurred before
        ([5, 6, 7, 5, 6, 8, 5, 6], [8, 5, 6]),  # (5, 6) twice before: the latest one
        ([4, 1, 2, 9, 3, 2], [9, 3, 2]),  # no 3- or 2-gram: the last token alone
        ([7, 7], [7]),  # a continuation may run up to the end
        ([1, 2, 3], []),  # nothing recurs
        ([4], []),
    ],
)
def test_lookup_takes_what_followed_the_latest_occurrence_of_the_longest_ngram(
    history: list[int], expected: list[int]
) -> None:
    found = lookup(torch.tensor(history), max_tokens=3, max_ngram=3)
    assert found.tolist() == expected


def test_lookup_prefers_a_longer_ngram_to_a_later_shorter_one() -> None:
    history = torch.tensor([1, 2, 3, 4, 9, 3, 5, 1, 2, 3])  # (1, 2, 3) at 0; (3,) also at 5
    assert lookup(history, max_tokens=2, max_ngram=3).tolist() == [4, 9]
    assert lookup(history, max_tokens=2, max_ngram=1).tolist() == [5, 1]


@pytest.mark.parametrize(
    ("arch", "overrides"), [(m[0], m[2]) for m in MODELS], ids=[m[1] for m in MODELS]
)
@pytest.mark.parametrize("tokens", [1, 4])
def test_prompt_lookup_is_token_identical_to_greedy_on_random_repetitive_prompts(
    arch: str, overrides: dict, tokens: int
) -> None:
    model = tiny(arch, **overrides)
    # Decoders (context 40) go past the context: the window slides between passes.
    new = 40 if arch == "decoder" else 20
    for i, prompt in enumerate(repetitive_prompts(8, seed=tokens)):
        ids = torch.tensor([prompt])
        options = dict(max_new_tokens=new - i, eos_token_id=[])
        plain = generate(model, ids, **options)
        fast = generate(model, ids, **options, prompt_lookup_tokens=tokens)
        assert fast.tolist() == plain.tolist(), prompt


@pytest.mark.parametrize("positional", ["learned", "rotary"])
def test_left_padded_batch_with_eos_is_token_identical_to_greedy(positional: str) -> None:
    model = tiny("decoder", **(DECODERS["llama-gqa"] | {"positional": positional}))
    ids, mask = left_pad(repetitive_prompts(4, seed=3), pad_id=0)
    for eos in ([], [5], [7, 11, 13]):  # rows end at different steps, or never
        options = dict(max_new_tokens=30, eos_token_id=eos)
        plain = generate(model, ids, mask, **options)
        fast = generate(model, ids, mask, **options, prompt_lookup_tokens=5)
        assert fast.tolist() == plain.tolist()


@torch.no_grad()
def next_logits(model: torch.nn.Module, prompt: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """Reference: (1, V) logits after prompt + tokens, from one uncached pass."""
    return model(torch.cat((prompt, torch.tensor([tokens])), dim=1)).logits[:, -1]


def greedy_tokens(model: torch.nn.Module, prompt: torch.Tensor, n: int) -> list[int]:
    return generate(model, prompt, max_new_tokens=n, eos_token_id=[])[0].tolist()


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_a_fully_accepted_proposal_leaves_the_state_of_greedy_steps(name: str) -> None:
    model = tiny("decoder", **DECODERS[name])
    prompt = torch.tensor(repetitive_prompts(1, seed=5))
    greedy = greedy_tokens(model, prompt, 6)  # g0, then the proposal g1..g4 is greedy's own
    config = GenerationConfig(max_new_tokens=6, prompt_lookup_tokens=4)
    state = DecodingState(model, prompt, torch.ones_like(prompt), config)
    state.prefill()
    active = torch.tensor([True])
    accepted, logits = state.verify(torch.tensor([greedy[0]]), torch.tensor([greedy[1:5]]), active)
    assert accepted.tolist() == [greedy[1:5]]
    assert state.length == prompt.shape[1] + 5 and state.cache.lengths.tolist() == [state.length]
    reference = next_logits(model, prompt, greedy[:5])
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)
    assert int(logits.argmax()) == greedy[5]


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_a_proposal_rejected_at_its_first_token_is_rolled_back(name: str) -> None:
    model = tiny("decoder", **DECODERS[name])
    prompt = torch.tensor(repetitive_prompts(1, seed=6))
    greedy = greedy_tokens(model, prompt, 8)
    wrong = (greedy[1] + 1) % VOCAB  # anything but greedy's next token
    config = GenerationConfig(max_new_tokens=8, prompt_lookup_tokens=3)
    state = DecodingState(model, prompt, torch.ones_like(prompt), config)
    state.prefill()
    proposal = torch.tensor([[wrong, greedy[2], greedy[3]]])
    accepted, logits = state.verify(torch.tensor([greedy[0]]), proposal, torch.tensor([True]))
    assert accepted.shape == (1, 0)
    assert state.length == prompt.shape[1] + 1 and state.cache.lengths.tolist() == [state.length]
    reference = next_logits(model, prompt, greedy[:1])
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)
    continued = [int(logits.argmax())]  # the cache no longer holds the rejected tokens
    for _ in range(6):
        continued.append(int(state.advance(torch.tensor(continued[-1:])).argmax()))
    assert continued == greedy[1:]


def echo_prompt(model: torch.nn.Module) -> torch.Tensor:
    """A repetitive start and greedy decoding's own continuation of it: tiny models go on
    repeating pieces of both."""
    start = torch.tensor(repetitive_prompts(1, seed=7))
    return torch.cat((start, torch.tensor([greedy_tokens(model, start, 20)])), dim=1)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_prompt_lookup_needs_fewer_forward_passes_on_a_repetitive_prompt(name: str) -> None:
    model = tiny("decoder", **DECODERS[name])
    prompt = echo_prompt(model)
    calls = count_forward_calls(model)
    plain = generate(model, prompt, max_new_tokens=20, eos_token_id=[])
    plain_calls, calls[0] = calls[0], 0
    fast = generate(model, prompt, max_new_tokens=20, eos_token_id=[], prompt_lookup_tokens=6)
    fast_calls = calls[0]
    assert fast.tolist() == plain.tolist()
    assert plain_calls == 20  # the prompt, then one per further token
    accepted = settled_runs(model, prompt, max_new_tokens=20, prompt_lookup_tokens=6)
    assert fast_calls == plain_calls - len(accepted) < plain_calls  # accepted tokens cost no pass


def settled_runs(model: torch.nn.Module, prompt: torch.Tensor, **options: object) -> list[int]:
    """Generation positions whose token came out of an accepted proposal (not the first)."""
    positions: list[int] = []
    original = DecodingState.verify

    def spy(state: DecodingState, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        accepted, logits = original(state, *args)
        done = state.length - state.prompt_len  # generated tokens, the accepted ones included
        positions.extend(range(done - accepted.shape[1], done))
        return accepted, logits

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DecodingState, "verify", spy)
        generate(model, prompt, **options)
    return positions


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_eos_inside_an_accepted_run_stops_exactly_where_greedy_stops(name: str) -> None:
    model = tiny("decoder", **DECODERS[name])
    prompt = echo_prompt(model)
    greedy = greedy_tokens(model, prompt, 20)
    options = dict(max_new_tokens=20, eos_token_id=[], prompt_lookup_tokens=6)
    inside = settled_runs(model, prompt, **options)
    # an accepted token that does not occur before it in the output: greedy ends there
    at = next(i for i in inside if greedy[i] not in greedy[:i] and i + 1 < 20)
    options |= dict(eos_token_id=[greedy[at]])
    plain = generate(model, prompt, max_new_tokens=20, eos_token_id=[greedy[at]])
    fast = generate(model, prompt, **options)
    assert plain.shape == (1, at + 1)
    assert fast.tolist() == plain.tolist()
    assert at in settled_runs(model, prompt, **options)  # it still ended inside a run
    streamed = torch.stack(list(stream(model, prompt, **options)), dim=1)
    assert streamed.tolist() == plain.tolist()


class CharTokenizer:
    """Decodes id i as the character chr(65 + i): enough for stop strings."""

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(65 + i) for i in ids)


def test_stop_string_inside_an_accepted_run_stops_where_greedy_stops() -> None:
    model = tiny("decoder", **DECODERS["llama-gqa"])
    prompt = echo_prompt(model)
    greedy = greedy_tokens(model, prompt, 20)
    inside = settled_runs(model, prompt, max_new_tokens=20, prompt_lookup_tokens=6)
    at = inside[len(inside) // 2]
    stop = CharTokenizer().decode(greedy[at - 1 : at + 1])
    options = dict(max_new_tokens=20, stop_strings=stop, tokenizer=CharTokenizer())
    plain = generate(model, prompt, **options)
    fast = generate(model, prompt, **options, prompt_lookup_tokens=6)
    assert plain.shape[1] <= at + 1 and fast.tolist() == plain.tolist()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(prompt_lookup_tokens=-1), "prompt_lookup_tokens=-1 must be >= 0"),
        (dict(prompt_lookup_max_ngram=0), "prompt_lookup_max_ngram=0 must be >= 1"),
        (dict(do_sample=True), "not with do_sample=True"),
        (dict(top_p=0.9), "not with do_sample=True"),
        (dict(num_beams=2), "not with num_beams=2"),
        (dict(repetition_penalty=1.2), "not with repetition_penalty=1.2"),
        (dict(use_cache=False), "not with use_cache=False"),
        (dict(static_cache=True), "not with static_cache=True"),
        (dict(compile_step=True), "not with compile_step=True"),
    ],
)
def test_bad_prompt_lookup_options_are_config_errors(options: dict, message: str) -> None:
    lookup_on = {"prompt_lookup_tokens": 4} | options
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        GenerationConfig(max_new_tokens=4, **lookup_on)
