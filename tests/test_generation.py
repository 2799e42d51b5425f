"""Decoding loop: cache == recomputation, padding invariance, sampling filters, beams, errors.

References are independent of the loop: a plain full forward pass over the final sequence,
each prompt decoded alone, exhaustive search, and hand-built distributions.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from tformer import ModelConfig, build_model
from tformer.generation import generate, left_pad, stream
from tformer.generation.beam import beam_search
from tformer.generation.config import GenerationConfig
from tformer.generation.processors import min_p, repetition_penalty, top_k, top_p
from tformer.generation.state import DecodingState

VOCAB = 37

DECODERS = {
    "gpt-mha": dict(positional="learned", norm_position="pre", activation="gelu"),
    "llama-gqa": dict(
        positional="rotary",
        norm="rmsnorm",
        norm_position="pre",
        activation="swiglu",
        n_kv_heads=2,
        bias=False,
    ),
}
SEQ2SEQ = {
    "transformer-mha": dict(positional="sinusoidal", scale_embeddings=True),
    "seq2seq-gqa": dict(positional="rotary", norm_position="pre", n_kv_heads=1),
}


def tiny(arch: str, **overrides: object) -> torch.nn.Module:
    """A 2-layer model of `arch`, fixed seed; `overrides` are ModelConfig fields."""
    fields = dict(
        arch=arch,
        vocab_size=VOCAB,
        d_model=32,
        n_heads=4,
        n_layers=2,
        d_ff=48,
        max_seq_len=40,
        dropout=0.0,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        tie_embeddings=False,  # tied tiny models mostly repeat their last input token
    )
    config = ModelConfig(**(fields | overrides))  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():  # larger weights: peaked distributions, fewer near-ties
        for p in model.parameters():
            p.mul_(4.0 if p.dim() > 1 else 1.0)
    return model


MODELS = [("decoder", k, v) for k, v in DECODERS.items()] + [
    ("encoder-decoder", k, v) for k, v in SEQ2SEQ.items()
]


@pytest.fixture(params=MODELS, ids=[m[1] for m in MODELS])
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    arch, _, overrides = request.param
    return tiny(arch, **overrides)


def prompts(batch: int = 2, length: int = 6) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


def full_forward_logits(model, source, new_tokens):
    """Reference: logits (B, N, V) predicting each new token, from one uncached pass."""
    if model.config.arch == "decoder":
        ids = torch.cat((source, new_tokens), dim=1)
        return model(ids).logits[:, source.shape[1] - 1 : -1]
    start = torch.full((source.shape[0], 1), model.config.start_id)
    return model(source, torch.cat((start, new_tokens[:, :-1]), dim=1)).logits


@pytest.mark.parametrize("cache", ["dynamic", "static", "none"])
@torch.no_grad()
def test_cached_decoding_matches_full_recomputation(model, cache: str) -> None:
    source, steps = prompts(), 12
    config = GenerationConfig(
        max_new_tokens=steps, use_cache=cache != "none", static_cache=cache == "static"
    )
    state = DecodingState(model, source, torch.ones_like(source), config)
    logits, tokens = [state.prefill()], []
    for _ in range(steps - 1):
        tokens.append(logits[-1].argmax(-1))
        logits.append(state.advance(tokens[-1]))
    tokens.append(logits[-1].argmax(-1))
    new_tokens, step_logits = torch.stack(tokens, 1), torch.stack(logits, 1)
    reference = full_forward_logits(model, source, new_tokens)
    torch.testing.assert_close(step_logits, reference, atol=1e-4, rtol=0)
    assert torch.equal(reference.argmax(-1), new_tokens)
    eos_free = generate(model, source, max_new_tokens=steps, eos_token_id=[], use_cache=False)
    assert torch.equal(generate(model, source, max_new_tokens=steps, eos_token_id=[]), eos_free)


@torch.no_grad()
def test_left_padded_batch_matches_each_prompt_alone(model) -> None:
    rows = [[5, 9, 3, 17, 8, 30, 11], [12, 4], [25, 7, 7, 19]]
    ids, mask = left_pad(rows, pad_id=0)
    batched = generate(model, ids, mask, max_new_tokens=8, eos_token_id=[])
    for row, tokens in zip(batched, rows, strict=True):
        alone = generate(model, torch.tensor([tokens]), max_new_tokens=8, eos_token_id=[])
        assert torch.equal(row, alone[0])


def test_left_pad_puts_tokens_last() -> None:
    ids, mask = left_pad([[4, 5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[4, 5, 6], [0, 0, 7]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@torch.no_grad()
def test_rows_after_eos_are_padding_and_decoding_stops_early() -> None:
    model = tiny("decoder", **DECODERS["gpt-mha"])
    source = prompts(3)
    free = generate(model, source, max_new_tokens=6, eos_token_id=[])
    eos = int(free[0, 2])  # make row 0's third token the end-of-sequence token
    out = generate(model, source, max_new_tokens=6, eos_token_id=eos)
    ends = []
    for row, ref in zip(out, free, strict=True):
        hits = (ref == eos).nonzero()
        ends.append(int(hits[0]) + 1 if len(hits) else len(ref))
        assert torch.equal(row[: ends[-1]], ref[: ends[-1]])
        assert (row[ends[-1] :] == model.config.pad_id).all()
    assert out.shape[1] == max(ends)


def test_same_seed_gives_same_sample_and_ignores_global_rng(model) -> None:
    source = prompts()
    kwargs = dict(max_new_tokens=10, do_sample=True, temperature=1.5, eos_token_id=[])
    first = generate(model, source, seed=123, **kwargs)
    torch.rand(100)  # moving the global RNG must not matter
    assert torch.equal(generate(model, source, seed=123, **kwargs), first)
    others = [generate(model, source, seed=s, **kwargs) for s in (1, 2, 3)]
    assert any(not torch.equal(o, first) for o in others)


def test_top_k_one_sampling_equals_greedy(model) -> None:
    source = prompts()
    greedy = generate(model, source, max_new_tokens=10)
    sampled = generate(model, source, max_new_tokens=10, do_sample=True, top_k=1, seed=7)
    assert torch.equal(sampled, greedy)


def _log(probs: list[float]) -> torch.Tensor:
    return torch.tensor([probs]).log()


@pytest.mark.parametrize(
    ("p", "kept"),
    [(0.5, [0]), (0.51, [0, 1]), (0.8, [0, 1]), (0.81, [0, 1, 2]), (1.0, [0, 1, 2, 3])],
)
def test_top_p_keeps_smallest_set_reaching_p(p: float, kept: list[int]) -> None:
    scores = _log([0.3, 0.5, 0.15, 0.05])[:, [1, 0, 2, 3]]  # order [0.5, 0.3, 0.15, 0.05]
    assert torch.isfinite(top_p(scores, p))[0].nonzero().flatten().tolist() == kept


def test_top_k_and_min_p_filters_on_hand_built_distribution() -> None:
    scores = _log([0.1, 0.4, 0.3, 0.2])
    assert torch.isfinite(top_k(scores, 2))[0].tolist() == [False, True, True, False]
    # keep p >= min_p * 0.4: 0.18 keeps 0.2, 0.55 * 0.4 = 0.22 drops it
    assert torch.isfinite(min_p(scores, 0.45))[0].tolist() == [False, True, True, True]
    assert torch.isfinite(min_p(scores, 0.55))[0].tolist() == [False, True, True, False]


def test_repetition_penalty_divides_positive_multiplies_negative() -> None:
    scores = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert repetition_penalty(scores, seen, 2.0).tolist() == [[1.0, -4.0, 2.0, -2.0]]


def test_repetition_penalty_changes_greedy_output() -> None:
    model = tiny("decoder", **DECODERS["gpt-mha"])
    source = prompts(1)
    plain = generate(model, source, max_new_tokens=12, eos_token_id=[])
    penalised = generate(model, source, max_new_tokens=12, eos_token_id=[], repetition_penalty=1e4)
    # with an enormous penalty no token is repeated (prompt tokens included)
    seen = set(source[0].tolist())
    for token in penalised[0].tolist():
        assert token not in seen
        seen.add(token)
    assert not torch.equal(plain, penalised)


@torch.no_grad()
def test_beam_search_with_all_beams_is_exhaustive(model) -> None:
    """With num_beams >= vocab every first token survives, so 2-token beam search must find
    the highest-probability 2-token continuation of all VOCAB**2."""
    source = prompts(1)
    best = generate(model, source, max_new_tokens=2, num_beams=VOCAB, eos_token_id=[])
    pairs = torch.tensor(list(itertools.product(range(VOCAB), repeat=2)))
    logp = full_forward_logits(model, source.expand(len(pairs), -1), pairs).log_softmax(-1)
    totals = logp.gather(-1, pairs[..., None]).sum((1, 2))
    assert best[0].tolist() == pairs[totals.argmax()].tolist()


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
@torch.no_grad()
def test_beam_scores_are_length_normalised_log_probs_best_first(model, length_penalty) -> None:
    source = prompts()
    config = GenerationConfig(
        max_new_tokens=8,
        num_beams=4,
        num_return_sequences=3,
        length_penalty=length_penalty,
        eos_token_ids=(model.config.eos_id, 5, 9, 13),  # several EOS ids: beams end early
    )
    state = DecodingState(
        model, source, torch.ones_like(source), GenerationConfig(max_new_tokens=8)
    )
    out = beam_search(state, config, pad_id=0)
    assert (out.scores[:, :-1] >= out.scores[:, 1:]).all()
    for b, n in itertools.product(range(source.shape[0]), range(3)):
        tokens = out.sequences[b, n]
        ends = torch.isin(tokens, torch.tensor(config.eos_token_ids)).nonzero()
        length = int(ends[0]) + 1 if len(ends) else config.max_new_tokens
        tokens = tokens[None, :length]
        logp = full_forward_logits(model, source[b : b + 1], tokens).log_softmax(-1)
        total = logp.gather(-1, tokens[..., None]).sum()
        expected = total / length**length_penalty
        torch.testing.assert_close(out.scores[b, n], expected, atol=1e-4, rtol=1e-5)


def test_stream_yields_what_generate_returns(model) -> None:
    source = prompts()
    kwargs = dict(max_new_tokens=9, do_sample=True, top_p=0.9, seed=3)
    streamed = torch.stack(list(stream(model, source, **kwargs)), dim=1)
    assert torch.equal(streamed, generate(model, source, **kwargs))


def test_fixed_capacity_cache_is_bounded_with_a_clear_error() -> None:
    model = tiny("decoder", **DECODERS["llama-gqa"])
    cache = model.new_cache()
    model(prompts(1, 3), cache=cache)
    cache.fix_capacity(4)
    cache.reserve(1)  # the fourth slot
    assert cache.lengths.tolist() == [3] and cache.key_slots(1) == 4
    with pytest.raises(ValueError, match="KV cache is full"):
        cache.reserve(1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(num_beams=0), "num_beams"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(temperature=0.0), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
        (dict(early_stopping="sometimes"), "early_stopping"),
        (dict(stop_strings=["x"]), "tokenizer"),
    ],
)
def test_bad_options_fail_clearly(kwargs: dict, message: str) -> None:
    model = tiny("decoder", **DECODERS["gpt-mha"])
    options = dict(max_new_tokens=4) | kwargs
    with pytest.raises(ValueError, match=message):
        generate(model, prompts(), **options)


def test_empty_prompt_needs_a_bos_token() -> None:
    with_bos = tiny("decoder", **DECODERS["gpt-mha"])
    out = generate(with_bos, torch.zeros(2, 0, dtype=torch.long), max_new_tokens=3)
    bos = torch.full((2, 1), with_bos.config.bos_id)
    assert torch.equal(out, generate(with_bos, bos, max_new_tokens=3))
    no_bos = build_model(with_bos.config.replace(bos_id=None)).eval()
    with pytest.raises(ValueError, match=r"prompt is empty.*no bos_id"):
        generate(no_bos, torch.zeros(1, 0, dtype=torch.long), max_new_tokens=3)
    ids, mask = left_pad([[4, 5], []], pad_id=0)
    with pytest.raises(ValueError, match=r"empty in row\(s\) \[1\]"):
        generate(no_bos, ids, mask, max_new_tokens=3)


def test_prompt_longer_than_context_fails_clearly(model) -> None:
    max_len = model.config.max_seq_len
    with pytest.raises(ValueError, match=f"max_seq_len={max_len}"):
        generate(model, prompts(1, max_len + 1), max_new_tokens=1)
    if model.config.arch == "decoder":  # what cannot slide past the context says so
        for options in (dict(num_beams=2), dict(static_cache=True)):
            with pytest.raises(ValueError, match="use max_new_tokens <= 10"):
                generate(model, prompts(1, max_len - 10), max_new_tokens=11, **options)
    else:
        with pytest.raises(ValueError, match=f"target .* max_seq_len={max_len}"):
            generate(model, prompts(1, 5), max_new_tokens=max_len + 1)


def _cropping_reference(model, prompt: list[int], new: int) -> list[int]:
    """Greedy decoding, each token from one uncached pass over the window that
    `DecodingState` documents: when the window is full its oldest quarter is dropped."""
    context = model.config.max_seq_len
    tokens, start = list(prompt), 0
    for _ in range(new):
        if len(tokens) - start > context:
            start += context // 4
        logits = model(torch.tensor([tokens[start:]])).logits[0, -1]
        tokens.append(int(logits.argmax()))
    return tokens[len(prompt) :]


@pytest.mark.parametrize(
    ("positional", "n_layers"),
    [("learned", 2), ("rotary", 1)],  # 1 layer: a rolling cache's keys depend on no context
)
@torch.no_grad()
def test_generation_slides_past_the_context(positional: str, n_layers: int) -> None:
    """A 40-position model asked for 60 tokens after a 10-token prompt gets them: learned
    positions encode the kept window again, rotary ones roll the cache; both equal cropping
    the context and recomputing, token for token."""
    model = tiny("decoder", positional=positional, n_layers=n_layers, norm_position="pre")
    prompt = prompts(1, 10)
    out = generate(model, prompt, max_new_tokens=60, eos_token_id=[])
    assert out.shape == (1, 60)
    assert out[0].tolist() == _cropping_reference(model, prompt[0].tolist(), 60)
    uncached = generate(model, prompt, max_new_tokens=60, eos_token_id=[], use_cache=False)
    assert torch.equal(uncached, out)


def test_sampling_options_sample_in_the_library_as_on_the_command_line(model) -> None:
    """One rule: a sampling option samples; do_sample=False with one is an error."""
    source = prompts()
    implied = generate(model, source, max_new_tokens=8, temperature=0.7, seed=3, eos_token_id=[])
    explicit = generate(
        model,
        source,
        config=GenerationConfig(max_new_tokens=8, do_sample=True, temperature=0.7, seed=3),
        eos_token_id=[],
    )
    assert torch.equal(implied, explicit)
    with pytest.raises(ValueError, match="goes in config="):
        generate(model, source, GenerationConfig(max_new_tokens=8))
    greedy = generate(model, source, max_new_tokens=8, eos_token_id=[])
    assert not torch.equal(implied, greedy)
    with pytest.raises(ValueError, match=r"temperature=0\.7 only applies when sampling"):
        generate(model, source, max_new_tokens=8, temperature=0.7, do_sample=False)


def test_encoder_model_is_rejected() -> None:
    encoder = build_model(ModelConfig(arch="encoder", vocab_size=VOCAB, d_model=16, n_heads=2))
    with pytest.raises(ValueError, match="DecoderOnlyLM or EncoderDecoder"):
        generate(encoder, prompts(), max_new_tokens=2)


@pytest.mark.slow
def test_compiled_static_decode_step_compiles_once_for_all_lengths(monkeypatch) -> None:
    """torch.compile sees one graph for every decode step (one shape), with the same tokens
    (the just-in-time step: what runs where no package can be kept)."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TFORMER_CACHE_DIR", "off")

    model = tiny("decoder", **DECODERS["llama-gqa"])
    source = prompts()
    eager = generate(model, source, max_new_tokens=12, eos_token_id=[])
    torch._dynamo.reset()
    counters.clear()
    compiled = generate(
        model, source, max_new_tokens=12, eos_token_id=[], static_cache=True, compile_step=True
    )
    assert torch.equal(compiled, eager)
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["recompiles"]


@pytest.mark.parametrize("cache", [dict(static_cache=True), dict(use_cache=False)])
def test_beam_search_same_with_static_cache_and_without_cache(model, cache: dict) -> None:
    """Beam reordering moves cache rows; recomputation (no cache) is the reference."""
    source = prompts()
    options = dict(max_new_tokens=8, num_beams=3, num_return_sequences=2, eos_token_id=(2, 5, 9))
    assert torch.equal(
        generate(model, source, **options, **cache), generate(model, source, **options)
    )


def test_generated_tokens_can_feed_a_training_step() -> None:
    """Outputs are ordinary tensors (not inference-mode ones): usable where autograd runs."""
    model = tiny("decoder", **DECODERS["gpt-mha"])
    tokens = generate(model, prompts(), max_new_tokens=4, eos_token_id=[])
    loss = model(tokens[:, :-1], labels=tokens[:, 1:]).loss
    loss.backward()
    assert next(model.parameters()).grad is not None


def test_unseeded_sampling_leaves_the_global_rng_alone() -> None:
    model = tiny("decoder", **DECODERS["gpt-mha"])
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    generate(model, prompts(), max_new_tokens=3, do_sample=True)
    assert torch.equal(torch.rand(3), expected)


def test_decoding_projects_only_the_last_position_to_the_vocabulary(model) -> None:
    """Prefill of a 6-token prompt (or a 6-token target prefix) asks the output projection for
    one position, whose logits equal the last row of the full projection."""
    projected: list[tuple[int, ...]] = []
    model.lm_head.proj.register_forward_hook(lambda m, i, o: projected.append(tuple(i[0].shape)))
    generate(model, prompts(), max_new_tokens=3)
    assert projected and all(shape[1] == 1 for shape in projected)

    ids = prompts()
    with torch.no_grad():
        if model.config.arch == "decoder":
            full, last = model(ids).logits, model(ids, logits_to_keep=2).logits
        else:
            memory = model.encode(ids)
            full = model.decode(ids, memory).logits
            last = model.decode(ids, memory, logits_to_keep=2).logits
    assert last.shape == (2, 2, VOCAB)
    torch.testing.assert_close(last, full[:, -2:], rtol=1e-5, atol=1e-6)


def test_logits_to_keep_refuses_a_loss() -> None:
    model = tiny("decoder")
    with pytest.raises(ValueError, match="a loss needs every position's logits"):
        model(prompts(), labels=prompts(), logits_to_keep=1)
