"""Our blocks against PyTorch's own Transformer layers, with the same weights copied in.

`torch.nn.TransformerEncoderLayer` / `TransformerDecoderLayer` implement the 2017 paper's
post-norm ReLU layers independently of our code; pre-norm is checked with `norm_first=True`.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tformer import ModelConfig
from tformer.modules.attention import MultiHeadAttention
from tformer.modules.block import DecoderBlock, EncoderBlock
from tformer.modules.feedforward import make_feedforward
from tformer.modules.mask import build_attention_mask

D_MODEL, N_HEADS, D_FF = 32, 4, 64


def _config(norm_position: str) -> ModelConfig:
    return ModelConfig(
        arch="encoder-decoder",
        vocab_size=50,
        d_model=D_MODEL,
        n_heads=N_HEADS,
        d_ff=D_FF,
        dropout=0.0,
        norm_position=norm_position,
        activation="relu",
    )


@torch.no_grad()
def _copy_attention(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
    q_w, k_w, v_w = theirs.in_proj_weight.chunk(3)
    q_b, k_b, v_b = theirs.in_proj_bias.chunk(3)
    for proj, w, b in ((ours.q_proj, q_w, q_b), (ours.k_proj, k_w, k_b), (ours.v_proj, v_w, v_b)):
        proj.weight.copy_(w)
        proj.bias.copy_(b)
    ours.out_proj.load_state_dict(theirs.out_proj.state_dict())


def _copy_common(ours: EncoderBlock | DecoderBlock, theirs: nn.Module) -> None:
    _copy_attention(ours.self_attn, theirs.self_attn)
    ours.self_attn_norm.load_state_dict(theirs.norm1.state_dict())
    ours.ffn.up.load_state_dict(theirs.linear1.state_dict())
    ours.ffn.down.load_state_dict(theirs.linear2.state_dict())


def _randomise_norms(module: nn.Module) -> None:
    """Non-trivial norm parameters so a swapped norm would be caught."""
    with torch.no_grad():
        for norm in (m for m in module.modules() if isinstance(m, nn.LayerNorm)):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)


def _padding_mask(lengths: list[int], total: int) -> torch.Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]  # True = token


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_encoder_block_matches_torch_transformer_encoder_layer(norm_position: str) -> None:
    theirs = nn.TransformerEncoderLayer(
        D_MODEL, N_HEADS, D_FF, dropout=0.0, batch_first=True, norm_first=norm_position == "pre"
    ).eval()
    _randomise_norms(theirs)
    ours = EncoderBlock(_config(norm_position)).eval()
    _copy_common(ours, theirs)
    ours.ffn_norm.load_state_dict(theirs.norm2.state_dict())

    x = torch.randn(3, 7, D_MODEL)
    tokens = _padding_mask([7, 4, 1], 7)
    expected = theirs(x, src_key_padding_mask=~tokens)
    mask = build_attention_mask(7, 7, causal=False, key_padding_mask=tokens)
    actual = ours(x, mask=mask).hidden
    # PyTorch's fast path returns zeros at padded positions; compare real tokens only.
    torch.testing.assert_close(actual[tokens], expected[tokens], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_decoder_block_matches_torch_transformer_decoder_layer(norm_position: str) -> None:
    theirs = nn.TransformerDecoderLayer(
        D_MODEL, N_HEADS, D_FF, dropout=0.0, batch_first=True, norm_first=norm_position == "pre"
    ).eval()
    _randomise_norms(theirs)
    ours = DecoderBlock(_config(norm_position), cross_attention=True).eval()
    _copy_common(ours, theirs)
    _copy_attention(ours.cross_attn, theirs.multihead_attn)
    ours.cross_attn_norm.load_state_dict(theirs.norm2.state_dict())
    ours.ffn_norm.load_state_dict(theirs.norm3.state_dict())

    target, memory = torch.randn(2, 6, D_MODEL), torch.randn(2, 9, D_MODEL)
    source_tokens = _padding_mask([9, 5], 9)
    expected = theirs(
        target,
        memory,
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(6),
        memory_key_padding_mask=~source_tokens,
    )
    actual = ours(
        target,
        mask=build_attention_mask(6, 6, causal=True),
        context=memory,
        context_mask=build_attention_mask(6, 9, causal=False, key_padding_mask=source_tokens),
    ).hidden
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("activation", "gate"),
    [
        ("swiglu", torch.nn.functional.silu),
        ("geglu", torch.nn.functional.gelu),
        (
            "geglu_tanh",
            lambda x: 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3))),
        ),
    ],
)
def test_gated_feedforward_is_down_of_gate_activation_times_up(activation, gate) -> None:
    """GLU variants by hand (Shazeer 2020); geglu_tanh is GELU's tanh formula written out."""
    torch.manual_seed(0)
    ffn = make_feedforward(D_MODEL, D_FF, activation, bias=False)
    x = torch.randn(2, 3, D_MODEL)
    expected = ffn.down(gate(ffn.gate(x)) * ffn.up(x))
    torch.testing.assert_close(ffn(x), expected, rtol=1e-5, atol=1e-6)
