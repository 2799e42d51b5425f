"""Positional encodings against the papers' formulas, computed independently in numpy."""

from __future__ import annotations

import numpy as np
import torch

from tformer.modules.position import (
    LearnedPositions,
    RotaryPositions,
    apply_rotary,
    positions_skipping_padding,
    sinusoidal_table,
)


def test_sinusoidal_table_matches_the_paper_formula() -> None:
    max_len, d_model = 50, 16
    expected = np.zeros((max_len, d_model))
    for pos in range(max_len):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            expected[pos, 2 * i] = np.sin(angle)  # PE(pos, 2i)
            expected[pos, 2 * i + 1] = np.cos(angle)  # PE(pos, 2i+1)
    np.testing.assert_allclose(sinusoidal_table(max_len, d_model).numpy(), expected, atol=1e-6)


def test_rotary_rotates_each_dimension_pair_by_position_times_frequency() -> None:
    head_dim, theta = 8, 10000.0
    x = torch.randn(1, 1, 5, head_dim)
    positions = torch.arange(5)[None]
    out = apply_rotary(x, *RotaryPositions(head_dim, theta).rotation(positions))

    # Independent reference: pair (j, j + half) as the complex number a + ib times e^{i pos w_j}.
    half = head_dim // 2
    values = x[0, 0].double().numpy()
    freqs = theta ** (-np.arange(half) * 2 / head_dim)
    z = (values[:, :half] + 1j * values[:, half:]) * np.exp(1j * np.arange(5)[:, None] * freqs)
    expected = np.concatenate([z.real, z.imag], axis=-1)
    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-5)


def test_rotary_attention_scores_depend_only_on_relative_position() -> None:
    rotary = RotaryPositions(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(q_pos: int, k_pos: int) -> torch.Tensor:
        rq = apply_rotary(q, *rotary.rotation(torch.tensor([[q_pos]])))
        rk = apply_rotary(k, *rotary.rotation(torch.tensor([[k_pos]])))
        return (rq * rk).sum()

    torch.testing.assert_close(score(7, 3), score(14, 10), atol=1e-5, rtol=1e-5)


def test_positions_skipping_padding_count_only_real_tokens() -> None:
    """fairseq's make_positions: padding (id 1 here) on either side shifts no token."""
    ids = torch.tensor([[1, 1, 7, 8, 9], [7, 8, 9, 1, 1], [7, 1, 8, 9, 5]])
    expected = torch.tensor([[-1, -1, 0, 1, 2], [0, 1, 2, -1, -1], [0, -1, 1, 2, 3]])
    assert torch.equal(positions_skipping_padding(ids, pad_id=1), expected)


def test_learned_positions_skip_the_offset_rows() -> None:
    """Position p reads row p + offset; position -1 (padding) reads row offset - 1."""
    table = LearnedPositions(max_seq_len=4, d_model=3, offset=2)
    assert table.weight.shape == (6, 3)
    with torch.no_grad():
        table.weight.copy_(torch.arange(6.0).unsqueeze(1).expand(6, 3))
    added = table.add(torch.zeros(1, 3, 3), torch.tensor([[-1, 0, 3]]))
    assert added[0, :, 0].tolist() == [1.0, 2.0, 5.0]
