"""The model's linear layer: `nn.Linear`, plus a faster path for decoding in float32 on the CPU.

Decoding multiplies a few activation rows by every weight matrix. PyTorch sends a float32
product with so few rows to MKL, whose kernel for it runs on one thread however many torch
uses: on the project's 2-core machine it read weights at about 11 GB/s where a plain `sum`
reads 27. Splitting the weight's output rows into one block per thread and multiplying the
blocks with one batched matmul (`torch.bmm`, which PyTorch spreads over its threads) gave
1.3-1.9x on SmolLM2-135M's shapes with 1 and 8 rows (docs/performance.md). bfloat16 products
are threaded already and gain nothing, so they, training (gradients), `torch.compile` and
long inputs keep `F.linear`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

SPLIT_MAX_ROWS = 32  # beyond this MKL's own threading takes over (1.2x at 32 rows, 1.0x later)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, same state dict) that splits few-row float32 products
    on the CPU across threads; see the module docstring for when and why."""

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_features) -> (..., out_features)."""
        if not torch.compiler.is_compiling():  # compiled code stays one graph, with F.linear
            parts = torch.get_num_threads()
            if _split_is_faster(x, self.weight, parts):
                return split_linear(x, self.weight, self.bias, parts)
        return F.linear(x, self.weight, self.bias)


def _split_is_faster(x: Tensor, weight: Tensor, parts: int) -> bool:
    return (
        parts > 1
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.numel() <= SPLIT_MAX_ROWS * x.shape[-1]
        and weight.shape[0] % parts == 0
        and weight.is_contiguous()
        and not torch.is_grad_enabled()
    )


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
