"""Position-wise feed-forward networks (paper section 3.3) and their gated variants.

There is no dropout inside the network: the 2017 paper, BERT and GPT-2 all drop out the
sub-layer's *output* (which `TransformerBlock` does, section 5.4), not its hidden units, and
on the CPU a dropout mask over the 4x wider hidden layer costs as much as a matmul.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from tformer.modules.linear import Linear

_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


class FeedForward(nn.Module):
    """FFN(x) = W2 act(W1 x + b1) + b2, applied to each position separately (eq. 2)."""

    def __init__(self, d_model: int, d_ff: int, activation: str, *, bias: bool) -> None:
        super().__init__()
        self.up = Linear(d_model, d_ff, bias=bias)
        self.down = Linear(d_ff, d_model, bias=bias)
        self.act = _ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, T, d_ff) -> (B, T, d_model)."""
        return self.down(self.act(self.up(x)))


_GATES = {"swiglu": F.silu, "geglu": F.gelu, "geglu_tanh": _ACTIVATIONS["gelu_tanh"]}


class GatedFeedForward(nn.Module):
    """GLU-variant FFN (Shazeer, 2020): down(act(gate(x)) * up(x)); SwiGLU uses SiLU (Llama),
    GeGLU exact GELU, and the tanh approximation of GELU for Gemma and T5 v1.1."""

    def __init__(self, d_model: int, d_ff: int, activation: str, *, bias: bool) -> None:
        super().__init__()
        self.gate = Linear(d_model, d_ff, bias=bias)
        self.up = Linear(d_model, d_ff, bias=bias)
        self.down = Linear(d_ff, d_model, bias=bias)
        self.act = _GATES[activation]

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, T, d_ff) -> (B, T, d_model)."""
        return self.down(self.act(self.gate(x)) * self.up(x))


def make_feedforward(d_model: int, d_ff: int, activation: str, *, bias: bool) -> nn.Module:
    """A gated FFN for the gated activations, the plain two-layer FFN otherwise."""
    cls = GatedFeedForward if activation in _GATES else FeedForward
    return cls(d_model, d_ff, activation, bias=bias)
