"""The compiled decode step (`compile_step=True`): compiled once, kept on disk, reused.

A decoder-only model on the CPU gets its static-cache step compiled ahead of time by
AOTInductor into a package (`PackagedStep`): `torch.export` traces the step with the KV
cache's buffers as inputs written in place, inductor compiles it to C++ with the options
`kernels.decode_compile_options` chooses, and the package is kept in `decode-steps/` of
the cache directory (`pretrained.cache.cache_root`: `$TFORMER_CACHE_DIR`, else
`$XDG_CACHE_HOME/tformer`, else `~/.cache/tformer`), named by everything it depends on: the
weights' bytes, the model's config, the step's input shapes, torch, the CPU (model,
capability, feature flags) and the thread count. Each package holds its weights (150-650 MB
for SmolLM2), so the directory keeps the `KEPT_PACKAGES` most recently used (using one marks
it; writing one removes the oldest beyond them); deleting the directory costs only a
compile. A later process that decodes with the same weights and shapes loads it in a
fraction of a second; nothing is traced again, and no Python runs between the step's
kernels. The cache holds `step_capacity` slots (a power of two), so generations of similar
lengths share one package.

Other models and devices compile the step just in time (`torch.compile`, inductor's own
caches carry it across processes; Dynamo traces it again in each), and so does a decoder-only
step where the cache is off (`TFORMER_CACHE_DIR=off`) or cannot be written.

Both freeze the weights into constants. Constants do not follow the model: after an
in-place change (an optimizer step, `load_state_dict`) Dynamo's guards see the same tensors,
so the just-in-time code is dropped when the weights' version counters moved, and a
package's name changes with the weights' bytes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import sys
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tformer import kernels
from tformer.models import DecoderOnlyLM
from tformer.modules.kv_cache import KVCache
from tformer.pretrained.cache import cache_root

Step = Callable[[Tensor, Tensor, Tensor, KVCache], Tensor]  # (ids, mask, positions, cache)
# packages kept in the directory: a few models x batch sizes x capacities (a few GB)
KEPT_PACKAGES = 8

# model -> its weights' versions when a just-in-time step was last compiled for it
_compiled_versions: weakref.WeakKeyDictionary[nn.Module, tuple[int, ...]] = (
    weakref.WeakKeyDictionary()
)
# model -> (its weights' versions, the digest of their bytes at those versions)
_digests: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], str]] = (
    weakref.WeakKeyDictionary()
)


def decode_step(model: nn.Module, forward: Step) -> Step:
    """The compiled form of `forward`, a decoding state's step: a package compiled ahead of
    time for decoder-only models on the CPU, else `torch.compile`d."""
    root = cache_root()
    on_cpu = next(model.parameters()).device.type == "cpu"
    if isinstance(model, DecoderOnlyLM) and on_cpu and root is not None:
        return PackagedStep(model, forward, root / "decode-steps")
    return compiled_step(model, forward)


def step_capacity(needed: int, limit: int) -> int:
    """KV slots of a compiled step's cache for `needed` positions (at most `limit`, the
    model's context): the next power of two, so that one compiled step serves every
    generation up to it."""
    return min(1 << max(needed - 1, 0).bit_length(), max(limit, needed))


def weight_versions(model: nn.Module) -> tuple[int, ...]:
    """Every parameter's and buffer's in-place version counter. Inference tensors keep none
    (they count as 0): they can only be changed inside `torch.inference_mode`."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return tuple(0 if t.is_inference() else t._version for t in tensors)


def weights_digest(model: nn.Module) -> str:
    """A digest of every parameter's and buffer's name, dtype, shape and bytes; hashed again
    only when the version counters moved (hashing SmolLM2's int4 weights takes ~0.3 s)."""
    versions = weight_versions(model)
    known = _digests.get(model)
    if known is not None and known[0] == versions:
        return known[1]
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8)
        digest.update(memoryview(data.numpy()))
    _digests[model] = (versions, digest.hexdigest())
    return _digests[model][1]


def compiled_step(model: nn.Module, forward: Step) -> Step:
    """`forward` compiled just in time, with no graph computing with weights the model no
    longer holds."""
    versions = weight_versions(model)
    if _compiled_versions.get(model, versions) != versions:
        # Dynamo keeps compiled code per function, not per model: dropping it is the only way
        # to drop the frozen constants (other models compile again too, on their next call)
        torch._dynamo.reset()
    _compiled_versions[model] = versions
    options = kernels.decode_compile_options(next(model.parameters()).device)
    step = torch.compile(forward, dynamic=False)

    def run(*args: Any) -> Tensor:
        # set for the call, not passed to torch.compile: Dynamo, which traces at the first
        # call, reads inductor's global `freezing` to make the weights graph constants
        # (`torch.compile(options=...)` reaches inductor only, and nothing is frozen)
        with torch._inductor.config.patch(options):
            return step(*args)

    return run


class _StepModule(nn.Module):
    """A decoding state's static-cache step over tensors alone, as `torch.export` takes it:
    ids (N, 1), mask (N, capacity), positions (N, 1), then the cache's buffers, which the
    step writes in place. Returns the logits (N, V) after the new token."""

    def __init__(self, model: DecoderOnlyLM, step: Step) -> None:
        super().__init__()
        self.model = model  # registered: export takes its weights as the module's parameters
        self.step = step  # which runs `model`

    def forward(
        self,
        ids: Tensor,
        mask: Tensor,
        positions: Tensor,
        lengths: Tensor,
        keys: list[Tensor],
        values: list[Tensor],
    ) -> Tensor:
        return self.step(ids, mask, positions, KVCache.from_fixed_buffers(lengths, keys, values))


class PackagedStep:
    """`forward`, a static-cache decode step of `model`, as an AOTInductor package in
    `directory`, found there or compiled into it at the first call (minutes; a line on
    stderr says so). Where the package cannot be written, it is compiled just in time."""

    def __init__(self, model: DecoderOnlyLM, forward: Step, directory: Path) -> None:
        self.model = model
        self.forward = forward
        self.directory = directory
        self.run: Step | None = None

    def __call__(self, ids: Tensor, mask: Tensor, positions: Tensor, cache: KVCache) -> Tensor:
        if self.run is None:
            self.run = self._prepare(ids, mask, positions, cache)
        return self.run(ids, mask, positions, cache)

    def _prepare(self, ids: Tensor, mask: Tensor, positions: Tensor, cache: KVCache) -> Step:
        """The package's runner for these inputs' shapes (compiled first if not on disk)."""
        args = (ids, mask, positions, *cache.fixed_buffers())
        path = self._package(args)
        if not path.exists():
            try:
                self._compile(args, path)
            except OSError as error:
                print(f"tformer: not keeping the compiled decode step: {error}", file=sys.stderr)
                return compiled_step(self.model, self.forward)
            remove_unused_packages(self.directory, keep=KEPT_PACKAGES)
        else:
            _mark_used(path)
        runner = _loaded(path)

        def run(ids: Tensor, mask: Tensor, positions: Tensor, cache: KVCache) -> Tensor:
            return runner(ids, mask, positions, *cache.fixed_buffers())

        return run

    def _package(self, args: tuple[Any, ...]) -> Path:
        """Where the package for these weights and input shapes lives."""
        leaves = [*args[:4], *args[4], *args[5]]
        cpu = kernels.cpu_info()
        facts = {
            "weights": weights_digest(self.model),
            "config": self.model.config.to_dict(),
            "inputs": [(str(t.dtype), tuple(t.shape)) for t in leaves],
            "torch": torch.__version__,
            # a package may use any instruction this CPU has: capability alone does not
            # tell an AMX Xeon from an AVX-512 EPYC (a shared cache directory sees both)
            "cpu": {"model": cpu.model, "capability": cpu.capability, "flags": sorted(cpu.flags)},
            "threads": torch.get_num_threads(),
            "options": _package_options(),
        }
        key = hashlib.blake2b(json.dumps(facts, sort_keys=True, default=str).encode())
        return self.directory / f"{key.hexdigest()[:32]}.pt2"

    def _compile(self, args: tuple[Any, ...], path: Path) -> None:
        """Export the step with `args`' shapes and compile it into `path` (written whole or
        not at all: compiled to a temporary name, then renamed)."""
        print(
            f"tformer: compiling the decode step ahead of time (once, minutes) into {path}",
            file=sys.stderr,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.pt2")
        try:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                # torch's own, from inductor's autotuning: nothing a user can act on
                warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
                # clones made outside inference mode: export writes its inputs in place
                examples = torch.utils._pytree.tree_map(lambda t: t.clone(), args)
                step = _StepModule(self.model, self.forward)
                program = torch.export.export(step, examples, strict=False)
                torch._inductor.aoti_compile_and_package(
                    program,
                    package_path=str(partial),
                    inductor_configs=_package_options(),
                )
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def _mark_used(path: Path) -> None:
    """Make `path` the most recently used package (its modification time: access times are
    often not kept)."""
    with contextlib.suppress(OSError):  # a read-only cache still serves its packages
        os.utime(path)


def remove_unused_packages(directory: Path, keep: int) -> None:
    """Delete all but the `keep` most recently used packages in `directory` (not the ones
    being written: hidden names). A process running a deleted package is unaffected: it has
    loaded it."""
    used_at = {}
    for package in directory.glob("[!.]*.pt2"):
        with contextlib.suppress(FileNotFoundError):  # removed by another process meanwhile
            used_at[package] = package.stat().st_mtime_ns
    for old in sorted(used_at, key=used_at.__getitem__, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


def _package_options() -> dict[str, bool | int]:
    """Inductor's options for a package: the CPU's, less merging int4 products of one input,
    whose pass fails on exported graphs in torch 2.13 (it reads the weight of an input's
    first user before checking that user is an int4 product)."""
    return kernels.decode_compile_options("cpu") | {"cpp.enable_concat_linear": False}


@functools.lru_cache(maxsize=4)
def _loaded(path: Path) -> Callable[..., Tensor]:
    """A loaded package, kept for the process (later generations reuse it)."""
    return torch._inductor.aoti_load_package(str(path))
