"""What the machine can do: its CPU class and matrix-multiply peak per precision (the
denominator of MFU). Every result records the CPU's model, torch's CPU capability and whether
bf16 is native, since a speed claim holds only for its CPU class."""

from __future__ import annotations

import os
import platform

import torch

from benchmarks.harness import time_steps
from tformer import kernels


def matmul_gflops(dtype: torch.dtype, size: int, device: torch.device, repeats: int) -> float:
    """Best-of-3 GFLOP/s of a square (size x size) @ (size x size) product."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up: kernel selection, page faults
    seconds = min(time_steps(lambda: torch.mm(a, b), repeats, device) for _ in range(3))
    return 2 * size**3 / seconds / 1e9


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
