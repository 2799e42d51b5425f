"""Int8 weight-only quantisation: faster decoding on the CPU.

Decoding one token multiplies a handful of activation rows by every weight matrix, so its
speed is set by how many bytes of weights are read per token, not by arithmetic. Storing each
`nn.Linear` weight as int8 with one bfloat16 scale per output row reads a quarter of the
float32 bytes; PyTorch's CPU kernel `torch._weight_int8pack_mm` multiplies bfloat16
activations by such weights directly. Measured on SmolLM2-135M: see docs/performance.md
(speed, and perplexity against float32 as the quality check).

The feed-forward down projections stay in bfloat16 by default: their inputs (the activated
hidden units) have the largest outliers, and on SmolLM2-135M quantising them too moved
held-out perplexity by +1.2% against float32, over our 1% budget; without them it is +0.7%.

The kernel is tuned for few rows (decoding); long prompts are slower than in bfloat16. The
result is an inference-only model: it cannot be trained or saved with `save_pretrained`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

INT8_MAX = 127


class Int8Linear(nn.Module):
    """y = x W^T + b with W stored as int8 rows times a per-row scale (symmetric, absmax)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()  # (out, in)
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / INT8_MAX  # (out,)
        quantised = (weight / scale[:, None]).round().clamp(-INT8_MAX, INT8_MAX)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", quantised.to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., out), computed and returned in bfloat16."""
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (N, in)
        out = torch._weight_int8pack_mm(rows, self.weight, self.scale)  # (N, out)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)


def quantize_int8(model: nn.Module, *, keep: tuple[str, ...] = ("ffn.down",)) -> nn.Module:
    """Replace the nn.Linear layers of `model` (in place) by Int8Linear, except those whose
    name ends with one of `keep`; everything else (kept layers, embeddings, norms) becomes
    bfloat16. Returns the model, in eval mode. CPU only."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 weight-only quantisation uses a CPU kernel; move the model to cpu")
    model.eval()
    linears = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not name.endswith(keep)
    ]
    for name, linear in linears:
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, Int8Linear(linear))
    return model.to(torch.bfloat16)
