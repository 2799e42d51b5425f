"""Which implementation runs where: the one place that chooses kernels and dtypes.

The blocks (`modules/`, `models/`) are written as the papers describe them; where two
computations give the same result and one is faster on some hardware, the block asks this
module which to run. Every rule here is a function of what the device can do -- queried or
measured once per process -- and of the call's shapes and dtypes, never of what one machine
happened to measure. The measurements behind each rule, per CPU class, are in
docs/performance.md.

Rules:
* `bf16_is_fast`: bfloat16 is the fast dtype only where the hardware computes it natively
  (CUDA with bf16, CPUs with AVX512-BF16 or AMX, Arm CPUs with BF16). Elsewhere (e.g.
  AVX2-only x86) PyTorch emulates it, many times slower than fp32, so
  `resolve_precision("auto")` and `compute_dtype` choose float32 there.
* `weight_only_dtype`: weight-only quantised models run in bfloat16 on every CPU, native or
  emulated: PyTorch's int4/int8 CPU kernels are vectorised for bfloat16 activations only
  (float32 ones take a scalar loop, 10-30x slower on AVX2).
* `linear_split_parts`: few-row float32 products on the CPU split the weight's output rows
  over the threads where that was measured faster, once per process: on the AVX512-BF16
  EPYC MKL's kernel for a product with so few rows runs on one thread and the split is 1.8x
  faster; on the AMX Xeon the split is 0.5-0.7x as fast.
* `attention_dtype`: attention over bf16 activations computes, and caches keys and values,
  in float32 on a CPU where bf16 is emulated (its CPU kernels' bf16 GEMMs are 4-6x slower).
* `explicit_attention`: bfloat16 training on the CPU over short keys runs softmax(QK^T)V
  written out (the CPU flash kernel's bf16 backward is slower there), and so does attention
  with soft-capped scores everywhere (no fused kernel caps them).
* `decode_compile_options`: a compiled decode step on the CPU freezes its weights into
  constants, so inductor can merge the int4 products that share an input (q/k/v,
  gate/up) into one, and where the CPU has AVX-512 autotunes its own int4 GEMM against
  ATen's (inductor has that micro-kernel for AVX-512 and AMX only).
* `use_packed_layout`: encoders run position-wise layers on the real tokens only when a
  batch has padding (see `modules/packing.py`).
* `dense_copy`: weight-only quantised layers asked to serve many rows at once (a batched
  server, a long prompt) multiply products of many rows by a dense copy of their quantised
  weights: the int4/int8 kernels' cost grows with every row, a dense product's hardly does.
  The copy is bfloat16 from 8 rows where bfloat16 is native, float32 from 32 rows where it
  is emulated.
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

SPLIT_MAX_ROWS = 32  # beyond this many rows MKL's own threading takes over
EXPLICIT_MAX_KEYS = 256  # from 512 keys on the fused kernel wins in bf16 training too
DENSE_AMX_MIN_ROWS = 8  # int4/int8 vs dense bf16 products on SmolLM2's shapes, AMX: equal at ~6
DENSE_MIN_ROWS = 32  # elsewhere (bf16 dot products on Zen 5, fp32 on AVX2): layers even at 16
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX512-BF16, AMX; Arm BF16
_BF16_MIN_SPEEDUP = 0.5  # measured fallback: bf16 at least half as fast as fp32 counts
_SPLIT_MIN_SPEEDUP = 1.25  # the split must win clearly: a near-tie is noise, not a reason
# (x, weight, bias, parts) -> x W^T + b computed as `parts` blocks of W's output rows
SplitProduct = Callable[[Tensor, Tensor, "Tensor | None", int], Tensor]


@dataclass(frozen=True)
class CPUInfo:
    """What the CPU can do, as benchmarks record it and the rules below read it."""

    model: str  # e.g. "AMD EPYC 7B12"
    capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX512", "AVX2", "DEFAULT"...
    native_bf16: bool  # bf16 arithmetic in hardware (not emulated)
    bf16_source: str  # how native_bf16 was decided: "cpu flags" or "measured"
    # the OS's feature flags (/proc/cpuinfo), empty where it gives none: code compiled for
    # this CPU (a decode-step package) may use any of them, AMX tiles included
    flags: frozenset[str] = frozenset()

    @property
    def amx(self) -> bool:
        """Intel AMX tiles: the Xeon class, whose capability torch reports as AVX512 too."""
        return "amx_tile" in self.flags


@functools.cache
def cpu_info() -> CPUInfo:
    """Queried once per process: /proc/cpuinfo's flags where the OS has them, else a short
    fp32-vs-bf16 matmul measurement (about 50 ms)."""
    model, flags = _proc_cpuinfo()
    capability = torch.backends.cpu.get_cpu_capability()
    if flags is not None:
        native = any(flag in flags for flag in _BF16_CPU_FLAGS)
        return CPUInfo(model, capability, native, "cpu flags", frozenset(flags))
    return CPUInfo(model, capability, _bf16_measured_fast(), "measured")


def _proc_cpuinfo() -> tuple[str, set[str] | None]:
    """(model name, feature flags) from Linux's /proc/cpuinfo; flags None elsewhere."""
    model = platform.processor() or platform.machine()
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return model, None
    fields: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())  # the first CPU's entries
    flags_line = fields.get("flags", fields.get("features"))  # x86, Arm
    return fields.get("model name", model), None if flags_line is None else set(flags_line.split())


def _bf16_measured_fast(size: int = 256, repeats: int = 3) -> bool:
    """Whether a (size x size) bf16 matmul runs at least half as fast as in fp32."""

    def seconds(dtype: torch.dtype) -> float:
        a = torch.randn(size, size).to(dtype)
        a @ a  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            a @ a
        return time.perf_counter() - started

    return seconds(torch.float32) / seconds(torch.bfloat16) >= _BF16_MIN_SPEEDUP


def bf16_is_fast(device: torch.device | str) -> bool:
    """Whether bfloat16 arithmetic is native (fast) on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_info().native_bf16
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """A recipe's `precision` -> "bf16" or "fp32"; "auto" is bf16 only where it is fast."""
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # and "auto"


def precision_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """ "fp32", "bf16" or "auto" (`resolve_precision`) -> the torch dtype."""
    return PRECISION_DTYPES[resolve_precision(precision, device)]


def compute_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype of products whose precision is ours to choose (Muon's orthogonalisation):
    bfloat16 where it is fast, else float32."""
    return torch.bfloat16 if bf16_is_fast(device) else torch.float32


def weight_only_dtype() -> torch.dtype:
    """The dtype of a weight-only quantised model on the CPU: its activations, scales and the
    layers left unquantised. bfloat16 on every CPU, also where bf16 matmuls are emulated.

    PyTorch's x86 int4 and int8 kernels (`_weight_int4pack_mm_for_cpu`,
    `_weight_int8pack_mm`) have vector code (AVX2 and AVX-512) for bfloat16 activations only,
    which they widen to float32 for the FMAs; float32 activations take a scalar loop. On an
    AVX2-only EPYC (2 threads, best of 3; docs/performance.md, "AVX2"): int4 90 us with bf16
    against 1,101 us with float32 for one row of 576 -> 1536, 2.5 against 65 ms for 64 rows;
    int8 76 against 773 us. What else a quantised model computes is elementwise or small,
    where bf16 costs little even when emulated (whole-model bf16 decoding there: 19.3 tok/s
    against float32's 12.5).
    """
    return torch.bfloat16


def linear_split_parts(x: Tensor, weight: Tensor, split: SplitProduct) -> int:
    """Into how many blocks of output rows to split x W^T (0 or 1: don't split); `split` is
    the split product (`modules.linear.split_linear`), timed once against the plain one.

    On some CPUs PyTorch sends a float32 product with few rows to an MKL kernel that runs on
    one thread however many torch uses; one batched matmul over a block of W's rows per
    thread is spread over all of them. Whether this CPU is one of those is measured once
    (`split_measured_fast`). bf16 products are threaded already; training (gradients), long
    inputs and `torch.compile` (which fuses its own way, and for which reading the thread
    count would break the graph) keep the plain product.
    """
    if torch.compiler.is_compiling() or torch.is_grad_enabled():
        return 0
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return 0
    parts = torch.get_num_threads()
    few_rows = x.numel() <= SPLIT_MAX_ROWS * x.shape[-1]
    fits = parts > 1 and few_rows and weight.shape[0] % parts == 0 and weight.is_contiguous()
    return parts if fits and split_measured_fast(split, parts) else 0


@functools.cache
def split_measured_fast(
    split: SplitProduct, parts: int, rows: int = 1, shape: tuple[int, int] = (2048, 512)
) -> bool:
    """Whether `split` over `parts` blocks of `rows` float32 rows runs `_SPLIT_MIN_SPEEDUP`
    times faster than `F.linear` here; timed on a (2048 x 512) weight, best of 5, a few
    milliseconds."""
    x = torch.randn(rows, shape[1])
    weight = torch.randn(*shape)

    def best_seconds(product: Callable[[], Tensor], repeats: int = 10) -> float:
        product()  # warm-up
        times = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(repeats):
                product()
            times.append(time.perf_counter() - started)
        return min(times)

    with torch.no_grad():
        plain = best_seconds(lambda: torch.nn.functional.linear(x, weight))
        split_s = best_seconds(lambda: split(x, weight, None, parts))
    return plain / split_s >= _SPLIT_MIN_SPEEDUP


def attention_dtype(q: Tensor, *, cached: bool) -> torch.dtype:
    """The dtype attention computes in, and a KV cache holds, for queries `q` of a call that
    reads a KV cache (`cached`: decoding and its prompt) or not (encoders, training): float32
    for bfloat16 ones on a CPU where bf16 is emulated, and for cached calls on one without
    AMX tiles; else q's own.

    PyTorch's CPU attention multiplies bf16 blocks with small bf16 GEMMs. Where bf16 is
    emulated that is slow for every call (AVX2 EPYC: one decoding query over 512 cached keys,
    SmolLM2's 9 query and 3 kv heads of 64, 524 us in bf16 against 91 us in float32). Where it
    is native without AMX (Zen 5 EPYC) it is slow for decoding queries (267 against 33 us over
    512 keys; a batch of 8 over 160: 623 against 109 us) and for a prompt (512
    tokens: 5.5 against 4.4 ms a layer), but faster for an encoder batch (MiniLM, 32
    sentences: 591 against 521 sentences/s with float32 attention) and, through the explicit
    path (`explicit_attention`), for training. With AMX bf16 is kept (not measured against
    float32). Cached keys and values in float32 take twice the bytes (SmolLM2-135M: 46 KB a
    token).
    """
    if q.dtype != torch.bfloat16 or q.device.type != "cpu":
        return q.dtype
    native = _cpu_bf16_decoding_native() if cached else _cpu_bf16_native()
    return q.dtype if native else torch.float32


@torch.compiler.assume_constant_result
def _cpu_bf16_native() -> bool:
    """`bf16_is_fast("cpu")`, as a constant of compiled code (which must not trace the
    /proc/cpuinfo query)."""
    return bf16_is_fast("cpu")


@torch.compiler.assume_constant_result
def _cpu_bf16_decoding_native() -> bool:
    """Whether cached attention stays bf16 on this CPU (`attention_dtype`), as a constant of
    compiled code: native bf16 and AMX tiles."""
    return bf16_is_fast("cpu") and cpu_info().amx


def explicit_attention(q: Tensor, key_len: int, *, capped: bool = False) -> bool:
    """Whether softmax(QK^T)V written out beats SDPA's fused kernel for this call.

    Always when the scores are `capped` (soft-capping, tanh(s / cap) * cap): SDPA cannot
    apply it, so the written-out path is the only one. Otherwise only bfloat16 training on
    the CPU with at most EXPLICIT_MAX_KEYS keys, where bf16 is native (where it is emulated
    `attention_dtype` has made the queries float32): there the CPU flash-attention kernel's
    backward pass is slower than two bf16 batched matmuls and a softmax; at longer keys, in
    float32 and in inference the fused kernel wins. The (B, H, T, T) weights it materialises
    are small at such lengths.
    """
    return capped or (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and q.requires_grad
        and key_len <= EXPLICIT_MAX_KEYS
    )


@dataclass(frozen=True)
class DenseCopy:
    """How a weight-only quantised layer multiplies many rows: from `min_rows` rows on, by a
    copy of its quantised weights in `dtype`."""

    min_rows: int
    dtype: torch.dtype


def dense_copy(device: torch.device | str) -> DenseCopy:
    """The dense copy that beats the int4/int8 CPU kernels for products of many rows here.

    The kernels take about the same time per activation row, while a dense product of 16 rows
    costs little more than one row's. The copy is bfloat16 where bf16 is native; where it is
    emulated a bf16 copy is slower than the kernels (AVX2 EPYC, 576 -> 1536 at 64 rows: 7.6
    against 2.0 ms int4) and float32 is the fast dense dtype, at twice bf16's bytes. With AMX
    tiles the copy wins from DENSE_AMX_MIN_ROWS rows (Xeon, 576 -> 1536: int4 146 us for 8
    rows, bf16 102); elsewhere from DENSE_MIN_ROWS: on the Zen 5 EPYC (AVX512-BF16 dot
    products, no tiles) int4 takes 54 against bf16's 95 us at 8 rows, 111 against 125 at 16,
    194 against 174 at 32 and loses on the output projection up to 16 rows (3.1 against 4.1
    ms); on the AVX2 EPYC float32 wins on the layers' shapes from 32 rows (0.72 against 1.24
    ms int4 for 576 -> 1536; 8.3 against 18.0 ms at 512) and loses a little on the output
    projection (55 against 48 ms int8; from 64 rows it wins). Numbers: docs/performance.md
    ("Serving", "AVX2", "Zen 5"), `python -m benchmarks.quantized_rows`.
    """
    dtype = torch.bfloat16 if bf16_is_fast(device) else torch.float32
    tiles = dtype == torch.bfloat16 and torch.device(device).type == "cpu" and cpu_info().amx
    return DenseCopy(DENSE_AMX_MIN_ROWS if tiles else DENSE_MIN_ROWS, dtype)


def decode_compile_options(device: torch.device | str) -> dict[str, bool | int]:
    """Inductor options for `torch.compile` of a decode step (`generation.compiled`).

    On the CPU: `freezing` makes the weights constants of the compiled code, which
    `cpp.enable_concat_linear` needs to turn int4 products of one input into one product;
    `max_autotune` then times inductor's int4 GEMM template against ATen's kernel, where
    that template exists (AVX-512; torch reports AMX machines as AVX512 too). Measured on
    the Xeon (SmolLM2 int4, 2 threads, 64 tokens at batch 1): 47.1 tok/s plain, 57.7 frozen
    and merged, 72.0 autotuned too; elsewhere autotuning has only ATen to pick and would
    add compile time for nothing. Other devices keep inductor's defaults.
    """
    if torch.device(device).type != "cpu":
        return {}
    options = {"freezing": True, "cpp.enable_concat_linear": True}
    if cpu_info().capability == "AVX512":
        options["max_autotune"] = True
        # not a choice, a courtesy: its timing tables would otherwise fill the terminal
        options |= {"autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}
    return options


def use_packed_layout(attention_mask: Tensor | None) -> bool:
    """Whether an encoder pass that may run padding-free (see `models/stack.py`) should.

    Only when the batch has padding: without it there is nothing to skip. Never under
    `torch.compile`, where the token count would be a data-dependent shape. Deciding reads
    the mask, a device sync on a GPU.
    """
    if attention_mask is None or torch.compiler.is_compiling():
        return False
    return not bool(attention_mask.all())
