"""The one place that chooses kernels and dtypes: bf16 only where the CPU computes it
natively, quantised layers follow the same choice, and the facts it reads are recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tformer import kernels
from tformer.quantize import Int4Linear, Int8Linear


def _cpu(native_bf16: bool) -> kernels.CPUInfo:
    return kernels.CPUInfo("test CPU", "AVX2", native_bf16, "cpu flags")


@pytest.fixture
def emulated_bf16(monkeypatch):
    """A CPU like the AVX2-only EPYC (Zen 2): bf16 is emulated."""
    monkeypatch.setattr(kernels, "cpu_info", lambda: _cpu(False))


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_bf16_is_native(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(kernels, "cpu_info", lambda: _cpu(native))
    assert kernels.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert kernels.compute_dtype("cpu") == (torch.bfloat16 if native else torch.float32)
    # an explicit choice is the user's, whatever the CPU
    assert kernels.resolve_precision("bf16", "cpu") == "bf16"
    assert kernels.resolve_precision("fp32", "cpu") == "fp32"


@pytest.mark.parametrize("layer", [Int8Linear, Int4Linear])
def test_quantised_layers_run_in_bf16_also_where_bf16_is_emulated(emulated_bf16, layer) -> None:
    """bfloat16 activations and scales, which PyTorch's int4/int8 CPU kernels have vector code
    for (float32 ones take a scalar loop): the product matches a float64 matmul of the
    bf16-rounded input with the layer's own weight grid (read back through identity rows),
    within bf16's rounding of the output."""
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    quantised = layer(linear)
    assert all(b.dtype == torch.bfloat16 for b in quantised.buffers() if b.is_floating_point())
    x = torch.randn(3, 64)
    out = quantised(x)
    assert out.dtype == torch.bfloat16
    identity = torch.eye(64, dtype=torch.bfloat16)
    grid = quantised(identity).double() - quantised.bias.double()  # (in, out): rows of W^T
    expected = x.bfloat16().double() @ grid + quantised.bias.double()
    torch.testing.assert_close(out.double(), expected, atol=2e-2, rtol=1e-2)


def test_cpu_facts_are_those_torch_reports() -> None:
    info = kernels.cpu_info()
    assert info.capability == torch.backends.cpu.get_cpu_capability()
    assert info.model and info.bf16_source in ("cpu flags", "measured")
    cpuinfo = Path("/proc/cpuinfo")
    rows = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    x86_flags = [row for row in rows if row.startswith("flags")]
    if x86_flags:  # the first CPU's flags, as the OS lists them
        assert info.flags == frozenset(x86_flags[0].partition(":")[2].split())
    assert info.amx == ("amx_tile" in info.flags)


@pytest.mark.parametrize("capability", ["AVX512", "AVX2"])
def test_decode_step_compiles_frozen_everywhere_on_the_cpu_and_autotunes_with_avx512(
    monkeypatch, capability: str
) -> None:
    monkeypatch.setattr(kernels, "cpu_info", lambda: kernels.CPUInfo("x", capability, True, "x"))
    options = kernels.decode_compile_options("cpu")
    assert options["freezing"] and options["cpp.enable_concat_linear"]
    assert options.get("max_autotune", False) == (capability == "AVX512")
    with torch._inductor.config.patch(options):  # every name is one of inductor's options
        assert torch._inductor.config.freezing
    assert kernels.decode_compile_options("meta") == {}


@pytest.mark.parametrize(
    ("native", "flags", "expected"),
    [
        (True, {"avx512_bf16", "amx_tile"}, kernels.DenseCopy(8, torch.bfloat16)),  # Xeon
        (True, {"avx512_bf16"}, kernels.DenseCopy(32, torch.bfloat16)),  # Zen 5
        (False, {"avx2"}, kernels.DenseCopy(32, torch.float32)),  # AVX2 EPYC
    ],
    ids=["amx", "bf16-native", "bf16-emulated"],
)
def test_many_row_products_use_a_dense_copy_from_the_rows_where_it_wins_on_each_cpu_class(
    monkeypatch, native: bool, flags: set[str], expected: kernels.DenseCopy
) -> None:
    """bf16 where bf16 is native, float32 where it is emulated; from 8 rows with AMX tiles,
    from 32 elsewhere (`python -m benchmarks.quantized_rows` on each class)."""
    info = kernels.CPUInfo("test CPU", "AVX512", native, "cpu flags", frozenset(flags))
    monkeypatch.setattr(kernels, "cpu_info", lambda: info)
    assert kernels.dense_copy("cpu") == expected
