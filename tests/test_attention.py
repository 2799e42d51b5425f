"""Attention: the fused (SDPA) and explicit paths agree, weights are proper distributions over
the allowed keys, grouped-query attention equals multi-head attention with repeated K/V heads,
and the one mask function builds padding, causal and cached-causal masks correctly."""

from __future__ import annotations

import pytest
import torch

from tformer import kernels
from tformer.kernels import EXPLICIT_MAX_KEYS, explicit_attention
from tformer.modules.attention import MultiHeadAttention
from tformer.modules.kv_cache import KVCache
from tformer.modules.mask import AttentionMask, build_attention_mask

D_MODEL = 32


def _attention(n_heads: int = 4, n_kv_heads: int = 4, *, cross: bool = False) -> MultiHeadAttention:
    return MultiHeadAttention(
        D_MODEL, n_heads, n_kv_heads, D_MODEL // n_heads, bias=True, dropout=0.0, cross=cross
    ).eval()


def _padding(lengths: list[int], total: int) -> torch.Tensor:
    return (torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]).long()


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_path_equals_math_path(n_kv_heads: int, causal: bool, padded: bool) -> None:
    attention = _attention(4, n_kv_heads)
    x = torch.randn(3, 8, D_MODEL)
    padding = _padding([8, 5, 2], 8) if padded else None
    mask = build_attention_mask(8, 8, causal=causal, key_padding_mask=padding)
    fused, no_weights = attention(x, mask=mask)
    explicit, weights = attention(x, mask=mask, need_weights=True)
    assert no_weights is None and weights is not None
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_attention_weights_sum_to_one_and_are_zero_on_masked_keys() -> None:
    attention = _attention()
    padding = _padding([8, 5, 3], 8)
    mask = build_attention_mask(8, 8, causal=True, key_padding_mask=padding)
    _, weights = attention(torch.randn(3, 8, D_MODEL), mask=mask, need_weights=True)
    assert weights is not None and weights.shape == (3, 4, 8, 8)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 8))
    future = torch.ones(8, 8, dtype=torch.bool).triu(1)
    assert weights[:, :, future].abs().max() == 0
    for row, length in enumerate([8, 5, 3]):
        assert torch.all(weights[row, :, :, length:] == 0)


def test_grouped_query_attention_equals_mha_with_repeated_kv_heads() -> None:
    gqa = _attention(n_heads=4, n_kv_heads=2)
    mha = _attention(n_heads=4, n_kv_heads=4)
    head_dim = D_MODEL // 4
    with torch.no_grad():
        mha.q_proj.load_state_dict(gqa.q_proj.state_dict())
        mha.out_proj.load_state_dict(gqa.out_proj.state_dict())
        for ours, theirs in ((gqa.k_proj, mha.k_proj), (gqa.v_proj, mha.v_proj)):
            # kv head g serves query heads 2g and 2g+1: repeat each head's rows twice.
            weight = ours.weight.view(2, head_dim, D_MODEL).repeat_interleave(2, dim=0)
            theirs.weight.copy_(weight.reshape(D_MODEL, D_MODEL))
            theirs.bias.copy_(ours.bias.view(2, head_dim).repeat_interleave(2, dim=0).flatten())
    x = torch.randn(2, 6, D_MODEL)
    mask = build_attention_mask(6, 6, causal=True)
    torch.testing.assert_close(gqa(x, mask=mask)[0], mha(x, mask=mask)[0], atol=1e-6, rtol=1e-5)


def test_cross_attention_ignores_padded_source_positions() -> None:
    attention = _attention(cross=True)
    target, source = torch.randn(2, 5, D_MODEL), torch.randn(2, 7, D_MODEL)
    padding = _padding([7, 4], 7)
    mask = build_attention_mask(5, 7, causal=False, key_padding_mask=padding)
    out, _ = attention(target, mask=mask, context=source)
    noisy_source = source.clone()
    noisy_source[1, 4:] = 100.0  # garbage where row 1 is padding
    noisy_out, _ = attention(target, mask=mask, context=noisy_source)
    torch.testing.assert_close(out, noisy_out)


def test_fully_padded_row_gives_finite_output() -> None:
    attention = _attention()
    padding = _padding([6, 0], 6)
    mask = build_attention_mask(6, 6, causal=False, key_padding_mask=padding)
    for need_weights in (False, True):
        out, _ = attention(torch.randn(2, 6, D_MODEL), mask=mask, need_weights=need_weights)
        assert torch.isfinite(out).all()


def test_cached_causal_mask_lets_new_queries_see_all_earlier_keys() -> None:
    # 2 new queries after 3 cached positions: query i sits at position 3 + i.
    mask = build_attention_mask(2, 5, causal=True, device=torch.device("cpu"))
    assert mask.allowed is not None
    expected = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask.allowed[0, 0], expected)


def test_unpadded_causal_mask_uses_the_fused_causal_kernel() -> None:
    mask = build_attention_mask(4, 4, causal=True)
    assert mask.is_causal and mask.allowed is None
    dense = mask.dense(4, 4, torch.device("cpu"))
    assert dense is not None
    assert torch.equal(dense[0, 0], torch.ones(4, 4, dtype=torch.bool).tril())


def test_mask_of_wrong_length_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="attention_mask covers 4 positions but there are 6 keys"):
        build_attention_mask(6, 6, causal=True, key_padding_mask=torch.ones(1, 4))


def test_segment_ids_give_a_block_diagonal_causal_mask() -> None:
    """Two examples packed into one row (slots 0-1 and 2-4): each token sees the earlier
    tokens of its own example only."""
    mask = build_attention_mask(5, 5, causal=True, segment_ids=torch.tensor([[0, 0, 1, 1, 1]]))
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 1, 1, 0],
            [0, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert mask.allowed is not None and not mask.is_causal
    assert torch.equal(mask.allowed[0, 0], expected)


def test_segment_ids_compose_with_padding_and_bidirectional_attention() -> None:
    segments = torch.tensor([[0, 1, 1, 2]])
    padding = torch.tensor([[1, 1, 0, 1]])
    mask = build_attention_mask(4, 4, causal=False, key_padding_mask=padding, segment_ids=segments)
    expected = torch.tensor(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.bool
    )
    assert mask.allowed is not None
    assert torch.equal(mask.allowed[0, 0], expected)


def test_segment_ids_of_wrong_length_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="segment_ids covers 3 positions but there are 6 keys"):
        build_attention_mask(6, 6, causal=True, segment_ids=torch.zeros(1, 3, dtype=torch.long))


def test_cpu_bf16_training_on_short_sequences_takes_the_explicit_path(monkeypatch) -> None:
    """The CPU flash kernel's bf16 backward is slow on short sequences, so that case uses the
    explicit path where bf16 is native; its gradients equal float32 SDPA's up to bf16
    rounding."""
    monkeypatch.setattr(kernels, "_cpu_bf16_native", lambda: True)
    q = torch.randn(2, 4, 16, 8, dtype=torch.bfloat16, requires_grad=True)
    assert explicit_attention(q, 16)
    assert not explicit_attention(q.detach(), 16)  # inference
    assert not explicit_attention(q, EXPLICIT_MAX_KEYS + 1)  # long sequences
    assert not explicit_attention(q.detach().float().requires_grad_(), 16)  # float32

    torch.manual_seed(0)
    reference = _attention(4, 2).train()
    fast = _attention(4, 2).train().to(torch.bfloat16)
    fast.load_state_dict(reference.state_dict())
    mask = build_attention_mask(16, 16, causal=True)
    x = torch.randn(2, 16, D_MODEL)
    x_ref, x_fast = x.clone().requires_grad_(), x.to(torch.bfloat16).requires_grad_()
    reference(x_ref, mask=mask)[0].square().sum().backward()

    def no_sdpa(*args, **kwargs):
        raise AssertionError("SDPA was called")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", no_sdpa)
    fast(x_fast, mask=mask)[0].float().square().sum().backward()
    assert x_ref.grad is not None and x_fast.grad is not None
    torch.testing.assert_close(x_fast.grad.float(), x_ref.grad, atol=0.05, rtol=0.05)


@pytest.mark.parametrize(
    ("native", "amx", "held"),
    [
        (True, True, torch.bfloat16),  # Xeon: bf16 with AMX tiles
        (True, False, torch.float32),  # Zen 5: AVX512-BF16 dot products, no tiles
        (False, False, torch.float32),  # AVX2: bf16 emulated
    ],
    ids=["amx", "bf16-native", "bf16-emulated"],
)
def test_bf16_cached_attention_computes_and_caches_in_float32_unless_the_cpu_has_bf16_tiles(
    monkeypatch, native: bool, amx: bool, held: torch.dtype
) -> None:
    """A bf16 layer's attention over a KV cache (a prompt, then a decoding step): in bf16
    where bf16 is native with AMX tiles; elsewhere in float32, its cache holding float32 keys
    and values and its output bf16 again. Either way the output is the float32 layer's up to
    bf16 rounding. Attention without a cache (encoders, training) keeps bf16 wherever bf16 is
    native."""
    flags = frozenset({"avx512f", "amx_tile"} if amx else {"avx512f"})
    info = kernels.CPUInfo("test CPU", "AVX512", native, "cpu flags", flags)
    monkeypatch.setattr(kernels, "cpu_info", lambda: info)
    q = torch.zeros(1, 2, 3, 4, dtype=torch.bfloat16)
    uncached = torch.bfloat16 if native else torch.float32
    assert kernels.attention_dtype(q, cached=False) == uncached
    assert kernels.attention_dtype(q, cached=True) == held
    assert kernels.attention_dtype(q.float(), cached=True) == torch.float32
    reference = _attention(4, 2)
    layer = _attention(4, 2).to(torch.bfloat16)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(2, 6, D_MODEL).to(torch.bfloat16).float()  # exact in both dtypes
    cached, cached_ref = KVCache(n_layers=1), KVCache(n_layers=1)
    outputs = []
    prompt_mask = build_attention_mask(5, 5, causal=True)
    step_mask = build_attention_mask(1, 6, causal=True)  # the last of 6 slots
    with torch.no_grad():
        for module, cache, inputs in ((layer, cached, x.bfloat16()), (reference, cached_ref, x)):
            prompt, step = inputs[:, :5], inputs[:, 5:]
            out = [module(prompt, mask=prompt_mask, cache=cache.self_attn[0])[0]]
            cache.advance(5, 2, x.device)
            out.append(module(step, mask=step_mask, cache=cache.self_attn[0])[0])
            outputs.append(torch.cat(out, dim=1))
    keys = cached.self_attn[0].key
    assert keys is not None and keys.dtype == held
    assert outputs[0].dtype == torch.bfloat16
    torch.testing.assert_close(outputs[0].float(), outputs[1], atol=0.03, rtol=0.03)

    seen: list[torch.dtype] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(query, *args, **kwargs):
        seen.append(query.dtype)
        return sdpa(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    with torch.no_grad():
        layer(x.bfloat16(), mask=build_attention_mask(6, 6, causal=True))  # no cache
    assert seen == [uncached]


def test_kv_cache_appends_in_place_and_reallocates_only_when_doubling() -> None:
    """23 positions appended as a 3-token prompt and 20 single steps: the cache equals their
    concatenation, and its buffer moved only when full (3 -> 6 -> 12 -> 24 slots), instead of
    being copied at every step."""
    cache = KVCache(n_layers=1)
    layer = cache.self_attn[0]
    chunks = [torch.randn(2, 3, 3, 8)] + [torch.randn(2, 3, 1, 8) for _ in range(20)]
    buffers = set()
    for chunk in chunks:
        key, value = layer.update(chunk, -chunk)
        cache.advance(chunk.shape[2], 2, chunk.device)
        buffers.add(layer.key.data_ptr())
    expected = torch.cat(chunks, dim=2)
    assert cache.longest == 23 and cache.lengths.tolist() == [23, 23]
    assert torch.equal(key, expected) and torch.equal(value, -expected)
    assert len(buffers) == 4


def test_kv_cache_keeps_gradients_across_steps() -> None:
    """With gradients recorded the cache concatenates (writing in place would modify tensors
    autograd saved): gradients through two cached steps equal those of one concatenation."""
    chunks = [torch.randn(1, 2, n, 4, requires_grad=True) for n in (3, 1, 1)]
    cache = KVCache(n_layers=1)
    total = torch.zeros(())
    for chunk in chunks:
        total = total + (cache.self_attn[0].update(chunk, chunk)[0] ** 2).sum()
        cache.advance(chunk.shape[2], 1, chunk.device)
    total.backward()
    # positions of chunk i are summed once per update from i on: 3, 2 and 1 times
    for times, chunk in zip((3, 2, 1), chunks, strict=True):
        torch.testing.assert_close(chunk.grad, 2 * times * chunk.detach())


@pytest.mark.parametrize("need_weights", [False, True])
def test_attention_scale_multiplies_the_dot_products_before_the_softmax(need_weights):
    """softmax(s q.k) v by hand, for a scale other than 1/sqrt(head_dim) (T5: 1.0)."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(8, 2, 2, 4, bias=False, dropout=0.0, scale=1.0).eval()
    x = torch.randn(1, 5, 8)
    out, _ = attention(x, mask=AttentionMask(None), need_weights=need_weights)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(1, 5, 2, 4).transpose(1, 2)

    q, k, v = (heads(p(x)) for p in (attention.q_proj, attention.k_proj, attention.v_proj))
    expected = (q @ k.transpose(-2, -1)).softmax(-1) @ v  # scale 1.0: no division
    expected = attention.out_proj(expected.transpose(1, 2).flatten(2))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
