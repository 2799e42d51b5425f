"""Tensor name/shape mapping between a tformer model and a Hugging Face state dict.

Both directions walk the model's own tensors and look each one up in the family's table, so
the model (built from the config) decides what must be present, and every mismatch can name
both the HF tensor and the shape tformer expects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from tformer.checkpoint import CheckpointError, unique_state_dict
from tformer.config import GATED_ACTIVATIONS, ModelConfig
from tformer.models import TformerModel
from tformer.pretrained.families import Family


def _conv1d(t: Tensor) -> Tensor:
    """GPT-2's Conv1D stores (in, out) weights; nn.Linear wants (out, in). Biases as they are."""
    return t.t() if t.ndim == 2 else t


def _drop_two_rows(t: Tensor) -> Tensor:
    """BART's position table starts at row 2 (positions are offset by 2); rows 0-1 are unused."""
    return t[2:]


def _add_two_rows(t: Tensor) -> Tensor:
    return torch.cat((t.new_zeros(2, t.shape[1]), t))


# name -> (HF tensor -> tformer tensor, tformer tensor -> HF tensor)
TRANSFORMS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "": (lambda t: t, lambda t: t),
    "conv1d": (_conv1d, _conv1d),
    "offset2": (_drop_two_rows, _add_two_rows),
    "row": (lambda t: t.reshape(-1), lambda t: t.reshape(1, -1)),
}
# How the parts of a fused HF tensor (several tformer tensors' rows in one) are laid out, as
# the number of groups they are interleaved in: "concat" stores all of part 0, then all of
# part 1... (GPT-2's c_attn after its transpose, Phi-3's qkv_proj and gate_up_proj);
# "per_head" stores head 0's rows of every part, then head 1's... (GPT-NeoX's
# query_key_value: each head's q, k and v in turn).
SPLITS: dict[str, Callable[[ModelConfig], int]] = {
    "concat": lambda config: 1,
    "per_head": lambda config: config.n_heads,
}


def split_rows(fused: Tensor, sizes: list[int], groups: int) -> list[Tensor]:
    """(sum(sizes), ...) -> parts of (sizes[k], ...), where each of `groups` consecutive
    blocks of rows holds 1/groups of every part in turn."""
    rest = fused.shape[1:]
    pieces = fused.reshape(groups, -1, *rest).split([s // groups for s in sizes], dim=1)
    return [p.reshape(s, *rest) for p, s in zip(pieces, sizes, strict=True)]


def fuse_rows(parts: list[Tensor], groups: int) -> Tensor:
    """The inverse of `split_rows`: parts of (sizes[k], ...) -> (sum(sizes), ...)."""
    rest = parts[0].shape[1:]
    return torch.cat([p.reshape(groups, -1, *rest) for p in parts], dim=1).reshape(-1, *rest)


@dataclass(frozen=True)
class Mapped:
    """Where one tformer tensor lives in the HF checkpoint."""

    hf_name: str
    transform: str = ""  # a TRANSFORMS key, applied to the whole HF tensor
    split: str | None = None  # a SPLITS key when the HF tensor fuses several tformer ones
    part: int = 0  # which of them this one is

    def to_tformer(self, t: Tensor) -> Tensor:
        return TRANSFORMS[self.transform][0](t).contiguous()

    def to_hf(self, t: Tensor) -> Tensor:
        return TRANSFORMS[self.transform][1](t)


def parse_rule_transform(spec: str) -> tuple[str, str | None, int]:
    """A rule's third entry -> (transform, split, part): "conv1d" is a TRANSFORMS key,
    "concat:1" part 1 of a fused tensor, "conv1d+concat:1" both (GPT-2's c_attn)."""
    transform, _, fused = spec.rpartition("+") if "+" in spec else ("", "", spec)
    if ":" not in fused:
        return fused, None, 0
    split, _, part = fused.partition(":")
    return transform, split, int(part)


def _pattern(template: str) -> str:
    escaped = re.escape(template)
    escaped = escaped.replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{s\}", r"(?P<s>encoder|decoder)")
    return escaped


def locate(name: str, family: Family, prefix: str, config: ModelConfig) -> Mapped | None:
    """The HF tensor holding tformer tensor `name` of a model with this config (its task head
    and whether its feed-forward is gated choose among the family's rules), or None if the
    table has no rule for it."""
    gated = family.gated_tensors if config.activation in GATED_ACTIVATIONS else ()
    for rule in (*family.head_tensors.get(config.task_head, ()), *gated, *family.tensors):
        ours, theirs, transform = (*rule, "")[:3]
        suffix = "" if ours.endswith((".weight", ".bias")) else r"(?P<suffix>\.weight|\.bias)"
        match = re.fullmatch(_pattern(ours) + suffix, name)
        if match:
            groups = match.groupdict()
            hf_name = theirs.format(p=prefix, i=groups.get("i"), s=groups.get("s"))
            hf_name += groups.get("suffix") or ""
            return Mapped(hf_name, *parse_rule_transform(transform))
    return None


def _mapping(
    model: TformerModel, family: Family, prefix: str, *, unique: bool
) -> dict[str, Mapped]:
    names = unique_state_dict(model) if unique else model.state_dict()
    mapping = {}
    for name in names:
        mapped = locate(name, family, prefix, model.config)
        if mapped is None:
            raise CheckpointError(
                f"tformer tensor {name!r} has no {family.model_types[0]} name in the table"
            )
        mapping[name] = mapped
    return mapping


def _stored_name(hf_name: str, family: Family, tensors: Mapping[str, Tensor]) -> str:
    """The name to read `hf_name` from: its second copy where the file holds one (the copy
    transformers computes with, see `Family.also_stored_as`)."""
    second = family.also_stored_as.get(hf_name)
    return second if second is not None and second in tensors else hf_name


def _units(mapping: dict[str, Mapped]) -> dict[str, list[str]]:
    """HF tensor -> the tformer tensors it holds: one, or a fused tensor's parts in order."""
    units: dict[str, list[str]] = {}
    for name, mapped in mapping.items():
        units.setdefault(mapped.hf_name, []).append(name)
    for names in units.values():
        names.sort(key=lambda n: mapping[n].part)
    return units


def _to_hf(mapped: Mapped, parts: list[Tensor], config: ModelConfig) -> Tensor:
    """The HF tensor holding tformer tensors `parts` (one unless `mapped` is a fused one's)."""
    if mapped.split is None:
        return mapped.to_hf(parts[0])
    return mapped.to_hf(fuse_rows(parts, SPLITS[mapped.split](config)))


def _to_tformer(
    mapped: Mapped, stored: Tensor, targets: list[Tensor], config: ModelConfig
) -> list[Tensor]:
    """The tformer tensors (shaped as `targets`) that HF tensor `stored` holds."""
    value = mapped.to_tformer(stored)
    if mapped.split is None:
        return [value]
    sizes = [t.shape[0] for t in targets]
    return split_rows(value, sizes, SPLITS[mapped.split](config))


def load_hf_tensors(
    model: TformerModel,
    family: Family,
    tensors: Mapping[str, Tensor],
    prefix: str,
    source: str,
    *,
    unread: Collection[str] = (),
) -> None:
    """Copy HF `tensors` into `model`, each as soon as it is looked up and checked, so a lazy
    mapping (`LazyTensors`) never holds more than one. Every problem is collected and raised
    together; the model is then partly filled, so callers build it for this load only.
    `unread`: tformer tensors the caller fills from elsewhere (still on the meta device)."""
    expected = unique_state_dict(model)  # detached views of the model's own tensors
    mapping = _mapping(model, family, prefix, unique=True)
    problems = []
    for hf_name, names in _units(mapping).items():
        if all(name in unread for name in names):
            continue
        mapped, targets = mapping[names[0]], [expected[n] for n in names]
        hf_shape = tuple(_to_hf(mapped, [t.to("meta") for t in targets], model.config).shape)
        stored_name = _stored_name(hf_name, family, tensors)
        if stored_name not in tensors:
            problems.append(f"missing tensor {stored_name!r} (expected shape {hf_shape})")
            continue
        stored = tensors[stored_name]
        if tuple(stored.shape) != hf_shape:
            problems.append(
                f"tensor {stored_name!r} has shape {tuple(stored.shape)}, expected shape "
                f"{hf_shape} (for tformer's {', '.join(names)})"
            )
            continue
        with torch.no_grad():
            for target, value in zip(
                targets, _to_tformer(mapped, stored, targets, model.config), strict=True
            ):
                target.copy_(value)
    known = {m.hf_name for m in _mapping(model, family, prefix, unique=False).values()}
    known |= {family.also_stored_as[n] for n in known if n in family.also_stored_as}
    unused = sorted(
        n for n in tensors if n not in known and not any(re.search(p, n) for p in family.ignored)
    )
    if unused:
        problems.append(f"unexpected tensor(s) tformer would ignore: {', '.join(unused[:8])}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model:\n  " + "\n  ".join(problems))


def hf_tensors(model: TformerModel, family: Family, prefix: str) -> dict[str, Tensor]:
    """The model's weights under HF names (fused tensors concatenated back in their layout)."""
    state = unique_state_dict(model)
    mapping = _mapping(model, family, prefix, unique=True)
    out: dict[str, Tensor] = {}
    for hf_name, names in _units(mapping).items():
        parts = [state[n] for n in names]
        out[hf_name] = _to_hf(mapping[names[0]], parts, model.config).contiguous()
    for hf_name, second in family.also_stored_as.items():
        if hf_name in out:  # a copy, not a view: safetensors refuses shared storage
            out[second] = out[hf_name].clone()
    return out
