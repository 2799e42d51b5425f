"""The compiled decode step: `torch.compile` with the options `kernels` chooses, and a guard
that keeps frozen weights from going stale.

On the CPU the step compiles with inductor's freezing (`kernels.decode_compile_options`): the
weights become constants of the compiled code. Constants do not follow the model: after an
in-place change of its weights (an optimizer step, `load_state_dict`) Dynamo's guards see
the same tensors with the same shapes, and the cached code would go on computing with the
old values. So each model's weight versions (PyTorch's per-tensor count of in-place writes)
are remembered when its step is compiled, and compiled code is dropped when they moved.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn

from tformer import kernels

# model -> its weights' versions when a step was last compiled for it
_compiled_versions: weakref.WeakKeyDictionary[nn.Module, tuple[int, ...]] = (
    weakref.WeakKeyDictionary()
)


def weight_versions(model: nn.Module) -> tuple[int, ...]:
    """Every parameter's and buffer's in-place version counter. Inference tensors keep none
    (they count as 0): they can only be changed inside `torch.inference_mode`."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return tuple(0 if t.is_inference() else t._version for t in tensors)


def compiled_step(model: nn.Module, forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """`forward` compiled for decoding `model` on its device, with no graph computing with
    weights the model no longer holds."""
    versions = weight_versions(model)
    if _compiled_versions.get(model, versions) != versions:
        # Dynamo keeps compiled code per function, not per model: dropping it is the only way
        # to drop the frozen constants (other models compile again too, on their next call)
        torch._dynamo.reset()
    _compiled_versions[model] = versions
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    options = kernels.decode_compile_options(device)
    step = torch.compile(forward, dynamic=False)

    def run(*args: object) -> Tensor:
        # set for the call, not passed to torch.compile: Dynamo, which traces at the first
        # call, reads inductor's global `freezing` to make the weights graph constants
        # (`torch.compile(options=...)` reaches inductor only, and nothing is frozen)
        with torch._inductor.config.patch(options):
            return step(*args)

    return run
