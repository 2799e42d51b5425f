"""Positional encodings against the papers' formulas, computed independently in numpy."""

from __future__ import annotations

import numpy as np
import torch

from tformer.modules.position import RotaryPositions, apply_rotary, sinusoidal_table


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
