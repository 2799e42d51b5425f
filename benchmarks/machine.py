"""What the machine can do: its CPU class and matrix-multiply peak per precision (the
denominator of MFU). Every result records the CPU's model, torch's CPU capability and whether
bf16 is native, since a speed claim holds only for its CPU class."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable

import torch

from benchmarks.harness import time_steps
from tformer import kernels

PEAK_PRODUCT_S = 0.05  # a square product this long is big enough to show a kernel's peak
SMALLEST_SQUARE = 256


def matmul_gflops(dtype: torch.dtype, size: int, device: torch.device, repeats: int) -> float:
    """Best-of-3 GFLOP/s of a square (n x n) @ (n x n) product, n at most `size`.

    n doubles from 256 while one product takes under `PEAK_PRODUCT_S`: a native kernel
    reaches `size` (2048 fp32 on 2 AVX2 cores: ~0.2 s), while an emulated dtype stops small
    (bf16 on AVX2 runs ~0.9 GFLOP/s: 20 s for one 2048 product, 10 min for the 31 products a
    fixed size took, before any benchmark ran).
    """

    def square_product(n: int) -> Callable[[], torch.Tensor]:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        torch.mm(a, b)  # warm-up: kernel selection, page faults
        return lambda: torch.mm(a, b)

    n = min(SMALLEST_SQUARE, size)
    product = square_product(n)
    while n * 2 <= size and time_steps(product, 1, device) < PEAK_PRODUCT_S:
        n *= 2
        product = square_product(n)
    seconds = min(time_steps(product, repeats, device) for _ in range(3))
    return 2 * n**3 / seconds / 1e9


def device_name(device: torch.device) -> str:
    """Names results files: the GPU, or the CPU's capability class and threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = kernels.cpu_info()
    capability = cpu.capability.lower() + ("-amx" if cpu.amx else "")
    return f"{platform.machine()}-{capability} x{torch.get_num_threads()} threads"


def machine_facts(device: torch.device, quick: bool) -> dict[str, object]:
    size, repeats = (1024, 5) if quick else (2048, 10)
    if device.type == "cuda":
        size, repeats = 8192, 20
    cpu = kernels.cpu_info()
    return {
        "device": device_name(device),
        "cpu_model": cpu.model,
        "cpu_capability": cpu.capability,
        "native_bf16": cpu.native_bf16,
        "amx": cpu.amx,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_fp32_gflops": matmul_gflops(torch.float32, size, device, repeats),
        "matmul_bf16_gflops": matmul_gflops(torch.bfloat16, size, device, repeats),
    }
