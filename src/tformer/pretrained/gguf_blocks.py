"""A GGUF file's 4-bit blocks as the int4 layers' own, without a float32 round trip.

A Q4_1 block holds 32 consecutive weights of a row as a float16 scale d, a float16 minimum m
and 32 4-bit codes q (w = d q + m); a Q4_0 block has no minimum (w = d (q - 8)). That is
`quantize.Int4Blocks` with groups of 32, so an int4 load repacks the file's codes straight
into the kernel's layout: no float32 matrix is made, and the layer multiplies by the file's
own weights, up to the compute dtype's rounding of scales and minima. Dequantising and
re-quantising min-max finds the same codes only in blocks whose codes reach both 0 and 15.

Q8_0 (32 int8 codes and one scale per block) has no exact counterpart: the int8 kernel takes
one scale per row. Such tensors (SmolLM2's embeddings, which the output projection shares)
are dequantised and quantised per row as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tformer.pretrained.gguf_layout import gguf_package
from tformer.quantize import Int4Blocks

FOUR_BIT = ("Q4_0", "Q4_1")


def int4_blocks(tensor: Any) -> Int4Blocks | None:
    """The blocks of a `gguf.ReaderTensor` stored as Q4_0 or Q4_1 (codes (out, in), scales
    and minima (out, in / 32)), else None. Reads the memory-mapped bytes once, as views."""
    kind = tensor.tensor_type.name
    if kind not in FOUR_BIT or tensor.data.ndim != 2:
        return None
    _, block_bytes = gguf_package().GGML_QUANT_SIZES[tensor.tensor_type]
    rows = tensor.data.shape[0]
    blocks = tensor.data.reshape(rows, -1, block_bytes)  # (out, G, bytes of a block)
    scale = _float16(blocks, 0)  # (out, G)
    if kind == "Q4_1":
        minimum, packed = _float16(blocks, 2), blocks[..., 4:]
    else:
        minimum, packed = -8 * scale, blocks[..., 2:]
    # (out, G, 16) bytes -> (out, G, 32) codes: a block's first 16 weights are the low
    # nibbles, its last 16 the high ones (the order `gguf`'s dequantisers read them in).
    codes = np.concatenate((packed & 0x0F, packed >> 4), axis=-1).reshape(rows, -1)
    return Int4Blocks(torch.from_numpy(codes), torch.from_numpy(scale), torch.from_numpy(minimum))


def _float16(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The float16 at byte `offset` of every block, as float32 (out, G)."""
    return blocks[..., offset : offset + 2].view(np.float16)[..., 0].astype(np.float32)
