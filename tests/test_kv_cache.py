"""KV cache: each row has its own length, a fixed-capacity cache decodes exactly as a growing
one, and (as properties over random shapes, padding and GQA ratios) cached decoding equals
one uncached pass, padding never changes a row's outputs, and no position sees the future.

References are uncached full-sequence passes of the same model, each row run alone.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tformer import ModelConfig, build_model
from tformer.modules.mask import build_attention_mask

VOCAB = 50
POSITIONALS = ("learned", "rotary")


def decoder(positional: str, n_heads: int = 4, n_kv_heads: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    config = ModelConfig(
        arch="decoder",
        vocab_size=VOCAB,
        d_model=32,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        n_layers=2,
        d_ff=48,
        max_seq_len=32,
        positional=positional,
        norm="rmsnorm",
        norm_position="pre",
        activation="swiglu",
        dropout=0.0,
    )
    return build_model(config).eval()


def alone(model, row: list[int]) -> torch.Tensor:
    """Logits (T, V) of one row run alone, uncached: the reference."""
    return model(torch.tensor([row])).logits[0]


@pytest.mark.parametrize("positional", POSITIONALS)
@torch.no_grad()
def test_rows_of_different_lengths_decode_as_if_alone(positional: str) -> None:
    """A right-padded batch prefilled, then cropped to each row's real length: the next steps
    write each row at its own slot and position, with no mask from the caller."""
    model = decoder(positional)
    rows = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.zeros(3, 6, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
    cache = model.new_cache()
    model(ids, cache=cache)  # padding after each row is cached too, then dropped
    cache.crop(lengths)
    assert cache.lengths.tolist() == [6, 3, 4] and not cache.uniform
    steps = torch.tensor([[20, 21], [22, 23], [24, 25]])
    for t in range(steps.shape[1]):
        logits = model(steps[:, t : t + 1], cache=cache).logits[:, -1]  # (B, V)
        for b, row in enumerate(rows):
            expected = alone(model, row + steps[b, : t + 1].tolist())[-1]
            torch.testing.assert_close(logits[b], expected, atol=1e-5, rtol=1e-5)
    assert cache.lengths.tolist() == [8, 5, 6]


@torch.no_grad()
def test_selecting_rows_keeps_their_lengths() -> None:
    model = decoder("rotary")
    cache = model.new_cache()
    model(torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]]), cache=cache)
    cache.crop(torch.tensor([4, 3]))
    cache.select(torch.tensor([1]))  # the other row finished: it leaves the batch
    assert cache.lengths.tolist() == [3] and cache.uniform
    logits = model(torch.tensor([[12]]), cache=cache).logits[0, -1]
    torch.testing.assert_close(logits, alone(model, [9, 10, 11, 12])[-1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positional", POSITIONALS)
@torch.no_grad()
def test_rows_prefilled_alone_join_a_running_batch(positional: str) -> None:
    """Continuous batching: each prompt is prefilled in a cache of its own, then appended to
    the batch (`extend`) while earlier rows are mid-generation; every row then decodes as if
    it were alone, and a finished row leaves (`select`) without disturbing the rest."""
    model = decoder(positional)
    rows = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]
    batch = model.new_cache()
    for row in rows:
        single = model.new_cache()
        model(torch.tensor([row]), cache=single)
        batch.extend(single)
        for b in range(len(batch.lengths)):  # one step of the batch after each join
            rows[b].append(30 + len(rows[b]))
        step = torch.tensor([[r[-1]] for r in rows[: len(batch.lengths)]])
        logits = model(step, cache=batch).logits[:, -1]
        for b, row in enumerate(rows[: len(batch.lengths)]):
            torch.testing.assert_close(logits[b], alone(model, row)[-1], atol=1e-5, rtol=1e-5)
    assert batch.lengths.tolist() == [len(r) for r in rows] and not batch.uniform
    batch.select(torch.tensor([0, 2]))  # the middle row finished
    logits = model(torch.tensor([[40], [41]]), cache=batch).logits[:, -1]
    torch.testing.assert_close(logits[0], alone(model, [*rows[0], 40])[-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[1], alone(model, [*rows[2], 41])[-1], atol=1e-5, rtol=1e-5)


def test_extend_refuses_fixed_capacity_and_empty_caches() -> None:
    model = decoder("rotary")
    filled, fixed = model.new_cache(), model.new_cache()
    with torch.no_grad():
        model(torch.tensor([[5, 6]]), cache=filled)
        model(torch.tensor([[5, 6]]), cache=fixed)
    fixed.fix_capacity(4)
    with pytest.raises(ValueError, match="growing"):
        filled.extend(fixed)
    with pytest.raises(ValueError, match="growing"):
        filled.extend(model.new_cache())


@pytest.mark.parametrize("positional", POSITIONALS)
@torch.no_grad()
def test_fixed_capacity_decodes_like_the_growing_cache(positional: str) -> None:
    model = decoder(positional)
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10]])
    growing, fixed = model.new_cache(), model.new_cache()
    model(prompt, cache=growing)
    model(prompt, cache=fixed)
    fixed.fix_capacity(8)
    for token in (11, 12, 13, 14):
        step = torch.full((2, 1), token)
        fixed.reserve(1)
        expected = model(step, cache=growing).logits
        out = model(step, cache=fixed).logits
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert fixed.key_slots(1) == 8 and fixed.lengths.tolist() == [7, 7]


def test_crop_cannot_lengthen_rows() -> None:
    model = decoder("rotary")
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.tensor([[5, 6, 7]]), cache=cache)
    with pytest.raises(ValueError, match="only shorten"):
        cache.crop(torch.tensor([4]))


# ---- properties over random shapes, padding patterns and GQA ratios -------------------------

HEADS = st.sampled_from([(4, 4), (4, 2), (4, 1)])  # (n_heads, n_kv_heads): GQA ratios 1, 2, 4
ROWS = st.lists(st.lists(st.integers(3, VOCAB - 1), min_size=1, max_size=7), min_size=1, max_size=3)


@settings(max_examples=12, deadline=None)
@given(rows=ROWS, heads=HEADS, positional=st.sampled_from(POSITIONALS), new=st.integers(1, 4))
@torch.no_grad()
def test_cached_left_padded_decoding_equals_each_row_alone(rows, heads, positional, new) -> None:
    """Left-padded batch, prefill + `new` cached single steps == each row's uncached pass."""
    model = decoder(positional, *heads)
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, width - len(row) :] = torch.tensor(row)
        mask[b, width - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = model.new_cache()
    logits = model(ids, attention_mask=mask, position_ids=positions, cache=cache).logits[:, -1]
    continued = [list(row) for row in rows]
    for _ in range(new):
        token = logits.argmax(-1)  # (B,)
        for b, row in enumerate(continued):
            torch.testing.assert_close(logits[b], alone(model, row)[-1], atol=1e-4, rtol=1e-4)
            row.append(int(token[b]))
        mask = torch.cat((mask, torch.ones(len(rows), 1, dtype=torch.long)), dim=1)
        positions = positions[:, -1:] + 1
        logits = model(
            token[:, None], attention_mask=mask, position_ids=positions, cache=cache
        ).logits[:, -1]


@settings(max_examples=12, deadline=None)
@given(
    rows=ROWS,
    heads=HEADS,
    arch=st.sampled_from(["decoder", "encoder"]),
    extra=st.integers(0, 3),
)
@torch.no_grad()
def test_padding_never_changes_a_rows_outputs(rows, heads, arch, extra) -> None:
    """Right padding (beyond the longest row too) and batch neighbours leave each row's
    outputs at its real positions as they are when the row runs alone."""
    torch.manual_seed(0)
    config = ModelConfig.preset(
        "tiny-decoder" if arch == "decoder" else "tiny-encoder",
        vocab_size=VOCAB,
        n_heads=heads[0],
        n_kv_heads=heads[1],
        dropout=0.0,
    )
    model = build_model(config).eval()
    width = max(map(len, rows)) + extra
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = 1
    batched = model(ids, attention_mask=mask).logits
    for b, row in enumerate(rows):
        single = model(torch.tensor([row]), attention_mask=torch.ones(1, len(row))).logits[0]
        torch.testing.assert_close(batched[b, : len(row)], single, atol=1e-4, rtol=1e-4)


@settings(max_examples=10, deadline=None)
@given(rows=ROWS, heads=HEADS, cut=st.integers(0, 6))
@torch.no_grad()
def test_no_position_sees_the_future(rows, heads, cut) -> None:
    """Changing the tokens after position `cut` leaves the causal outputs up to `cut` as they
    were."""
    model = decoder("rotary", *heads)
    for row in rows:
        if cut >= len(row) - 1:
            continue
        changed = row[: cut + 1] + [(t % (VOCAB - 3)) + 3 for t in row[cut + 1 :][::-1]]
        torch.testing.assert_close(
            alone(model, row)[: cut + 1], alone(model, changed)[: cut + 1], atol=1e-5, rtol=1e-5
        )


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    query_len=st.integers(1, 6),
    past=st.integers(0, 6),
    causal=st.booleans(),
    data=st.data(),
)
def test_random_masks_never_produce_nan(batch, query_len, past, causal, data) -> None:
    """Any padding pattern, fully padded rows included, keeps attention finite."""
    key_len = past + query_len
    bits = data.draw(st.lists(st.booleans(), min_size=batch * key_len, max_size=batch * key_len))
    padding = torch.tensor(bits, dtype=torch.long).view(batch, key_len)
    mask = build_attention_mask(query_len, key_len, causal=causal, key_padding_mask=padding)
    q = torch.randn(batch, 2, query_len, 8)
    k, v = torch.randn(batch, 2, key_len, 8), torch.randn(batch, 2, key_len, 8)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask.bias(q.dtype))
    assert torch.isfinite(out).all()


@torch.no_grad()
def test_logits_can_be_kept_at_each_rows_own_position() -> None:
    """A right-padded batch keeps each row's last real position's logits (B, 1, V)."""
    model = decoder("rotary")
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    everything = model(ids).logits  # (2, 4, V)
    kept = model(ids, logits_to_keep=torch.tensor([3, 1])).logits
    assert kept.shape == (2, 1, everything.shape[-1])
    torch.testing.assert_close(kept[:, 0], everything[[0, 1], [3, 1]])
    with pytest.raises(ValueError, match="one position"):
        model(ids, logits_to_keep=torch.tensor([4, 1]))
