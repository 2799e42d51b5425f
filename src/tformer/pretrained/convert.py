"""Tensor name/shape mapping between a tformer model and a Hugging Face state dict.

Both directions walk the model's own tensors and look each one up in the family's table, so
the model (built from the config) decides what must be present, and every mismatch can name
both the HF tensor and the shape tformer expects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from tformer.checkpoint import CheckpointError, unique_state_dict
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


@dataclass(frozen=True)
class Mapped:
    """Where one tformer tensor lives in the HF checkpoint."""

    hf_name: str
    transform: str = ""  # a TRANSFORMS key, or "qkv:<k>" for part k of a fused q/k/v
    part: int | None = None

    def to_tformer(self, t: Tensor) -> Tensor:
        if self.part is not None:  # (d, 3d) Conv1D -> (d, d) slice k -> Linear (d, d)
            return _conv1d(t.chunk(3, dim=-1)[self.part]).contiguous()
        return TRANSFORMS[self.transform][0](t).contiguous()

    def to_hf(self, t: Tensor) -> Tensor:
        return _conv1d(t) if self.part is not None else TRANSFORMS[self.transform][1](t)

    def hf_shape(self, t: Tensor) -> tuple[int, ...]:
        """Shape of the whole HF tensor that holds tformer tensor `t` (all three q/k/v parts)."""
        shape = list(self.to_hf(t).shape)
        if self.part is not None:
            shape[-1] *= 3
        return tuple(shape)


def _pattern(template: str) -> str:
    escaped = re.escape(template)
    escaped = escaped.replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{s\}", r"(?P<s>encoder|decoder)")
    return escaped


def locate(name: str, family: Family, prefix: str, head: str) -> Mapped | None:
    """The HF tensor holding tformer tensor `name` of a model with task head `head`, or None
    if the table has no rule for it."""
    for rule in (*family.head_tensors.get(head, ()), *family.tensors):
        ours, theirs, transform = (*rule, "")[:3]
        suffix = "" if ours.endswith((".weight", ".bias")) else r"(?P<suffix>\.weight|\.bias)"
        match = re.fullmatch(_pattern(ours) + suffix, name)
        if match:
            groups = match.groupdict()
            hf_name = theirs.format(p=prefix, i=groups.get("i"), s=groups.get("s"))
            hf_name += groups.get("suffix") or ""
            if transform.startswith("qkv:"):
                return Mapped(hf_name, "", int(transform.split(":")[1]))
            return Mapped(hf_name, transform)
    return None


def _mapping(
    model: TformerModel, family: Family, prefix: str, *, unique: bool
) -> dict[str, Mapped]:
    names = unique_state_dict(model) if unique else model.state_dict()
    head = model.config.task_head
    mapping = {}
    for name in names:
        mapped = locate(name, family, prefix, head)
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


def load_hf_tensors(
    model: TformerModel, family: Family, tensors: Mapping[str, Tensor], prefix: str, source: str
) -> None:
    """Copy HF `tensors` into `model`, each as soon as it is looked up and checked, so a lazy
    mapping (`LazyTensors`) never holds more than one. Every problem is collected and raised
    together; the model is then partly filled, so callers build it for this load only."""
    expected = unique_state_dict(model)  # detached views of the model's own tensors
    problems = []
    for name, mapped in _mapping(model, family, prefix, unique=True).items():
        target = expected[name]
        hf_name = _stored_name(mapped.hf_name, family, tensors)
        if hf_name not in tensors:
            hf_shape = mapped.hf_shape(target)
            problems.append(f"missing tensor {hf_name!r} (expected shape {hf_shape})")
            continue
        stored = tensors[hf_name]
        value = mapped.to_tformer(stored)
        if value.shape != target.shape:
            problems.append(
                f"tensor {hf_name!r} has shape {tuple(stored.shape)}, "
                f"expected shape {mapped.hf_shape(target)} (for tformer's {name})"
            )
            continue
        with torch.no_grad():
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
    """The model's weights under HF names (fused q/k/v concatenated back, in q, k, v order)."""
    parts: dict[str, dict[int, Tensor]] = {}
    out: dict[str, Tensor] = {}
    state = unique_state_dict(model)
    for name, mapped in _mapping(model, family, prefix, unique=True).items():
        tensor = state[name]
        if mapped.part is None:
            out[mapped.hf_name] = mapped.to_hf(tensor).contiguous()
        else:
            parts.setdefault(mapped.hf_name, {})[mapped.part] = mapped.to_hf(tensor)
    for hf_name, pieces in parts.items():
        out[hf_name] = torch.cat([pieces[k] for k in sorted(pieces)], dim=-1).contiguous()
    for hf_name, second in family.also_stored_as.items():
        if hf_name in out:  # a copy, not a view: safetensors refuses shared storage
            out[second] = out[hf_name].clone()
    return out
