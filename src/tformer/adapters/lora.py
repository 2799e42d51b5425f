"""LoRA: low-rank updates added from outside to chosen linear layers of any tformer model.

Hu et al. 2021 (eq. 3): a frozen weight W (out, in) gets a trainable update of rank r,
y = W x + (alpha / r) B A dropout(x), with A (r, in) Kaiming-uniform and B (out, r) zero, so
training starts from the base model's own outputs. The initialisation and the scaling are
PEFT's (alpha / sqrt(r) with `rslora`), so adapters move between the two unchanged.

The adapter is a child module of the layer it adapts (`<layer>.lora`, parameters `A` and `B`)
and its update is added by a forward hook on that layer: the blocks know nothing of LoRA, the
base tensors keep their names, and the Trainer (which optimises the parameters that require a
gradient) trains the adapters alone without a change. Merging adds B A into W for inference
at the base model's speed; unmerging subtracts it again.

The frozen base may be held in bfloat16 (`base_dtype`), half its memory, where the hardware
computes bf16 natively: the base then runs in bf16, while the adapters (and the modules
trained in full) keep float32 weights, take their inputs in float32 and hand their results
back in the base's dtype, so the optimizer updates float32 tensors only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.hooks import RemovableHandle

from tformer.errors import ConfigError, InputError
from tformer.field_types import check_field_types
from tformer.kernels import PRECISION_DTYPES, precision_dtype
from tformer.models.heads import LMHead, TokenClassificationHead
from tformer.quantize import Int4Linear, Int8Linear

ALL_LINEAR = "all-linear"


@dataclass(frozen=True)
class LoraConfig:
    """Which layers get an adapter and how large it is (defaults are PEFT's).

    `targets` names tformer modules as PEFT's `target_modules` does: a list entry matches a
    module whose name is it or ends with "." + it (["q_proj", "v_proj"], ["ffn.up"]); a
    single string is a regular expression the whole name must match; "all-linear" is every
    linear layer except the output layer (see `output_layers`).

    `train` names modules (by the same rule as a `targets` list) that are trained in full
    next to the adapters, PEFT's `modules_to_save`: a task head that starts from scratch,
    such as a new classifier, has nothing to adapt.

    `base_dtype` holds the frozen base in "fp32", "bf16" (half the memory), or "auto": bf16
    where the device computes it natively (see `tformer.kernels.bf16_is_fast`), else fp32.
    It is not part of PEFT's format: the adapters themselves are float32 either way.
    """

    targets: tuple[str, ...] | str = ("q_proj", "v_proj")
    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    rslora: bool = False  # scale by alpha / sqrt(rank) (Kalajdzievski 2023), PEFT's use_rslora
    train: tuple[str, ...] = ()
    base_dtype: str = "fp32"

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.base_dtype not in (*PRECISION_DTYPES, "auto"):
            raise ConfigError(f"base_dtype={self.base_dtype!r}; use fp32, bf16 or auto")
        if self.rank < 1:
            raise ConfigError(f"rank={self.rank} must be >= 1 (the adapters' inner size)")
        if self.alpha <= 0:
            raise ConfigError(f"alpha={self.alpha} must be > 0 (the update is alpha/rank B A x)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must be in [0, 1)")
        if not self.targets:
            raise ConfigError('targets is empty; name layers, e.g. ["q_proj", "v_proj"]')
        if isinstance(self.targets, str) and self.targets != ALL_LINEAR:
            try:
                re.compile(self.targets)
            except re.error as error:
                raise ConfigError(f"targets={self.targets!r} is not a regex: {error}") from error

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def selects(self, name: str) -> bool:
        """Whether the module called `name` is a target (for a list or a regex)."""
        if isinstance(self.targets, str):
            return re.fullmatch(self.targets, name) is not None
        return _named(name, self.targets)

    def trains(self, name: str) -> bool:
        """Whether the module called `name` is trained in full (`train`)."""
        return _named(name, self.train)


def _named(name: str, entries: tuple[str, ...]) -> bool:
    """PEFT's rule for a list of names: the name itself, or a suffix after a dot."""
    return any(name == entry or name.endswith("." + entry) for entry in entries)


def trained_modules(model: nn.Module, config: LoraConfig) -> dict[str, nn.Module]:
    """The modules `config.train` names, outermost only (a match's children come with it);
    a ConfigError for an entry that names nothing."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if config.trains(name) and not any(name.startswith(f"{kept}.") for kept in found):
            found[name] = module
    unmatched = [e for e in config.train if not any(_named(n, (e,)) for n in found)]
    if unmatched:
        raise ConfigError(
            f"train={list(config.train)!r}: {', '.join(unmatched)} names no module of the model "
            '(e.g. train = ["head.classifier"])'
        )
    return found


class LoraAdapter(nn.Module):
    """The update of one (in -> out) linear layer: x -> scaling * B A dropout(x)."""

    def __init__(self, linear: nn.Linear, config: LoraConfig) -> None:
        super().__init__()
        kind = {"device": linear.weight.device, "dtype": linear.weight.dtype}
        self.config = config
        self.A = nn.Parameter(torch.empty(config.rank, linear.in_features, **kind))
        self.B = nn.Parameter(torch.zeros(linear.out_features, config.rank, **kind))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # nn.Linear's own init, as PEFT does
        self.dropout = nn.Dropout(config.dropout)
        self.merged = False
        self.hook: RemovableHandle | None = None  # the layer's hook that adds the update

    def forward(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., out), computed in the adapter's own dtype (float32 next to a
        bf16 base)."""
        x = self.dropout(x.to(self.A.dtype))
        return F.linear(F.linear(x, self.A), self.B) * self.config.scaling

    def delta_weight(self) -> Tensor:
        """scaling * B A, (out, in): what merging adds to the layer's weight."""
        return (self.B @ self.A) * self.config.scaling


def _add_update(linear: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
    """Forward hook: the layer's output plus its adapter's update (unless merged into W)."""
    adapter = linear.lora
    if adapter.merged:
        return output
    return output + adapter(inputs[0]).to(output.dtype)


def output_layers(model: nn.Module) -> set[nn.Module]:
    """Layers "all-linear" leaves out, as PEFT does: the projection to the vocabulary (often
    tied to the token embedding, and the largest matrix) and a classifier, which is trained
    in full rather than adapted."""
    out: set[nn.Module] = set()
    for module in model.modules():
        if isinstance(module, LMHead):
            out.add(module.proj)
        elif isinstance(module, TokenClassificationHead):
            out.add(module.classifier)
    return out


def _targets(model: nn.Module, config: LoraConfig) -> dict[str, nn.Linear]:
    excluded = output_layers(model) if config.targets == ALL_LINEAR else set()
    chosen = {}
    for name, module in model.named_modules():
        if isinstance(module, (Int8Linear, Int4Linear)):
            raise InputError(
                f"{name} is quantised ({type(module).__name__}); LoRA adapts float linear "
                "layers only: add adapters to the unquantised model"
            )
        if config.targets == ALL_LINEAR:
            wanted = isinstance(module, nn.Linear) and module not in excluded
        else:
            wanted = config.selects(name)
        if not wanted:
            continue
        if not isinstance(module, nn.Linear):
            raise InputError(f"target {name} is a {type(module).__name__}, not a linear layer")
        if isinstance(getattr(module, "lora", None), LoraAdapter):
            raise InputError(f"{name} already has a LoRA adapter")
        chosen[name] = module
    if not chosen:
        names = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        )
        raise ConfigError(
            f"targets={config.targets!r} match no linear layer; the model's layers are named "
            f'{", ".join(names)} (e.g. targets = ["q_proj", "v_proj"])'
        )
    return chosen


def add_lora(model: nn.Module, config: LoraConfig) -> dict[str, LoraAdapter]:
    """Freeze every weight of `model` (except the modules `config.train` names) and give
    each target layer a trainable adapter.

    Returns the adapters by layer name. The model keeps its type and its base tensor names;
    `model.parameters()` that require a gradient are now the adapters' A and B only.
    """
    chosen = _targets(model, config)
    trained = trained_modules(model, config)
    model.requires_grad_(False)
    for module in trained.values():
        module.requires_grad_(True)
    for linear in chosen.values():
        linear.lora = LoraAdapter(linear, config)
        linear.lora.hook = linear.register_forward_hook(_add_update)
    _hold_base_in(model, base_dtype(model, config), trained)
    return lora_adapters(model)


def base_dtype(model: nn.Module, config: LoraConfig) -> torch.dtype:
    """The dtype `config.base_dtype` means for the model's device ("auto": bf16 where it is
    native there)."""
    device = next(model.parameters()).device
    return precision_dtype(config.base_dtype, device)


def _hold_base_in(model: nn.Module, dtype: torch.dtype, trained: dict[str, nn.Module]) -> None:
    """Cast the frozen floating-point parameters to `dtype`; adapters and trained modules keep
    theirs, and a trained module of another dtype than the base is wrapped to take its
    inputs in its own dtype and return the base's."""
    keep = {
        id(p) for m in (*lora_adapters(model).values(), *trained.values()) for p in m.parameters()
    }
    for param in model.parameters():
        if id(param) not in keep and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    for module in trained.values():
        own = next(module.parameters()).dtype
        if own != dtype:
            module.register_forward_pre_hook(_inputs_to(own))
            module.register_forward_hook(_output_to(dtype))


def _inputs_to(dtype: torch.dtype) -> Callable[[nn.Module, tuple], tuple]:
    """A forward pre-hook: floating-point inputs cast to `dtype`."""

    def hook(module: nn.Module, args: tuple) -> tuple:
        return tuple(
            a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args
        )

    return hook


def _output_to(dtype: torch.dtype) -> Callable[[nn.Module, tuple, object], object]:
    """A forward hook: a floating-point output cast to `dtype`."""

    def hook(module: nn.Module, args: tuple, output: object) -> object:
        is_float = torch.is_tensor(output) and output.is_floating_point()
        return output.to(dtype) if is_float else output

    return hook


def lora_adapters(model: nn.Module) -> dict[str, LoraAdapter]:
    """The model's adapters, by the name of the layer each one adapts."""
    return {
        name: m.lora
        for name, m in model.named_modules()
        if isinstance(getattr(m, "lora", None), LoraAdapter)
    }


def _adapted(model: nn.Module) -> Iterator[tuple[str, nn.Linear, LoraAdapter]]:
    adapters = lora_adapters(model)
    if not adapters:
        raise InputError("the model has no LoRA adapters (add them with add_lora)")
    layers = dict(model.named_modules())
    for name, adapter in adapters.items():
        yield name, layers[name], adapter


def merge_lora(model: nn.Module) -> None:
    """Add every adapter's update into its layer's weight (W <- W + scaling B A); the hooks
    then add nothing, so outputs are unchanged and run at the base model's speed. Train only
    unmerged adapters: a merged one is not in the computation, so it gets no gradient."""
    adapted = list(_adapted(model))
    shared = _shared_weights(model)
    tied = [name for name, linear, _ in adapted if id(linear.weight) in shared]
    if tied:
        raise InputError(
            f"cannot merge into {', '.join(tied)}: the weight is shared with another layer "
            "(tied embeddings), which the update would change too; keep the adapters unmerged"
        )
    for _, linear, adapter in adapted:
        if not adapter.merged:
            with torch.no_grad():
                linear.weight += adapter.delta_weight().to(linear.weight.dtype)
            adapter.merged = True


def unmerge_lora(model: nn.Module) -> None:
    """Subtract every merged update from its layer's weight (equal to the original weight up
    to float rounding); the adapters are applied by their hooks again."""
    for _, linear, adapter in _adapted(model):
        if adapter.merged:
            with torch.no_grad():
                linear.weight -= adapter.delta_weight().to(linear.weight.dtype)
            adapter.merged = False


def merge_and_unload_lora(model: nn.Module) -> nn.Module:
    """Merge every adapter (`merge_lora`) and take the adapters away: what is left is a
    plain model of the base's kind and tensor names, with the fine-tuned weights, which
    saves, exports and loads like any other (PEFT's `merge_and_unload`). Returns `model`."""
    merge_lora(model)
    for _, linear, adapter in list(_adapted(model)):
        assert adapter.hook is not None
        adapter.hook.remove()
        del linear.lora
    return model


def _shared_weights(model: nn.Module) -> set[int]:
    """The ids of parameters that more than one module holds (tied weights)."""
    seen: set[int] = set()
    shared: set[int] = set()
    for _, p in model.named_parameters(remove_duplicate=False):
        (shared if id(p) in seen else seen).add(id(p))
    return shared
