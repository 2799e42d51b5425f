"""The model's linear layer: `nn.Linear`, with the few-row split `kernels` may choose.

Decoding multiplies a few activation rows by every weight matrix. Where
`kernels.linear_split_parts` says so (few-row float32 products on a CPU where the split was
measured faster: there MKL's kernel for them runs on one thread), the product is computed
as one block of the weight's output rows per thread in a single batched matmul, which
PyTorch spreads over its threads. Same parameters, same state dict, same result as
`nn.Linear`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tformer import kernels


class Linear(nn.Linear):
    """`nn.Linear` whose product may be split over the CPU's threads (see module docstring)."""

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation, except for a layer built without values on the meta
        device (`models.empty`): torch computes a random fill there with Python decompositions
        whose first use imports its compiler, seconds of start-up for values no one reads."""
        if not self.weight.is_meta:
            super().reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_features) -> (..., out_features)."""
        parts = kernels.linear_split_parts(x, self.weight, split_linear)
        if parts > 1:
            return split_linear(x, self.weight, self.bias, parts)
        return F.linear(x, self.weight, self.bias)


def split_linear(x: Tensor, weight: Tensor, bias: Tensor | None, parts: int) -> Tensor:
    """x W^T + b computed as `parts` blocks of W's output rows in one batched matmul."""
    rows = x.reshape(-1, x.shape[-1])  # (N, in)
    blocks = weight.view(parts, -1, weight.shape[1]).transpose(1, 2)  # (P, in, out/P)
    repeated = rows.expand(parts, *rows.shape)  # (P, N, in), no copy
    if bias is None:
        out = torch.bmm(repeated, blocks)  # (P, N, out/P)
    else:
        out = torch.baddbmm(bias.view(parts, 1, -1), repeated, blocks)
    return out.transpose(0, 1).reshape(*x.shape[:-1], weight.shape[0])  # (..., out)
