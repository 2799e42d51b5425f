"""Record every stage of a forward pass with hooks that exist only inside a `with` block.

`capture(model)` attaches PyTorch forward hooks to the shared modules (embeddings, each block's
norms, attention and feed-forward, the final norm, the model itself) and removes them on exit,
so a model that is not being explained runs exactly the code it always runs. Recorded tensors
are detached references to what the model computed anyway -- nothing is copied -- except the
few derived on the spot from the model's own modules (the token, segment and position parts of
the embedding sum, which the model adds together without keeping).

Attention weights come from the attention module's explicit math path (`need_weights=True`,
set by a pre-hook): it computes softmax(QK^T/sqrt(d_k)) V exactly as the fused kernel does,
so outputs agree with the uncaptured pass up to float rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from tformer.models.output import ModelOutput
from tformer.models.stack import TransformerStack
from tformer.modules.attention import MultiHeadAttention
from tformer.modules.block import BlockOutput, TransformerBlock

SUBLAYERS = ("self_attn", "cross_attn", "ffn")


@dataclass
class LayerRecord:
    """One block. Tensors keep the batch dimension B.

    residual: the residual stream entering the block ("input") and after each sub-layer
        ("self_attn", "cross_attn" if present, "ffn"), each (B, T, d_model). A parallel-
        residual block's "self_attn" is its input plus the attention output (what the stream
        would hold had the feed-forward not read the input alongside).
    self_attention / cross_attention: weights (B, H, T, T_key) / (B, H, T, S).
    ffn_activation: the hidden layer of the feed-forward network, (B, T, d_ff).
    """

    residual: dict[str, Tensor] = field(default_factory=dict)
    self_attention: Tensor | None = None
    cross_attention: Tensor | None = None
    ffn_activation: Tensor | None = None
    # norm inputs (pre-norm) or outputs (post-norm), assembled into `residual` by the block hook
    _stream: dict[str, Tensor] = field(default_factory=dict, repr=False)


@dataclass
class StackRecord:
    """One TransformerStack (the decoder of a GPT, the encoder of BERT, or either half of a
    seq2seq model). Embedding parts are (B, T, d_model); `rotary_cos` is (B, T, head_dim)."""

    input_ids: Tensor | None = None
    position_ids: Tensor | None = None
    token_embeddings: Tensor | None = None
    segment_embeddings: Tensor | None = None
    position_encodings: Tensor | None = None  # additive encodings; zeros for rotary / none
    rotary_cos: Tensor | None = None
    embedding_sum: Tensor | None = None  # tokens + segments + positions
    embedded: Tensor | None = None  # after the optional embedding norm: the stream's start
    layers: list[LayerRecord] = field(default_factory=list)
    final_norm: Tensor | None = None


class Capture:
    """What one forward pass computed, by stack name ("decoder", "encoder")."""

    def __init__(self) -> None:
        self.stacks: dict[str, StackRecord] = {}
        self.output: ModelOutput | None = None  # what the last forward pass returned

    def __getitem__(self, stack: str) -> StackRecord:
        return self.stacks[stack]


def _stacks(model: nn.Module) -> list[tuple[str, TransformerStack]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, TransformerStack)]


def _sublayers(block: TransformerBlock) -> list[tuple[str, nn.Module]]:
    """(name, norm) of each sub-layer the block has, in execution order."""
    norms = [
        ("self_attn", block.self_attn_norm),
        ("cross_attn", block.cross_attn_norm),
        ("ffn", block.ffn_norm),
    ]
    return [(name, norm) for name, norm in norms if norm is not None]


class _Recorder:
    """Registers the hooks of one `capture` and fills a `Capture` from them."""

    def __init__(self, model: nn.Module, record: Capture) -> None:
        self.record = record
        self.handles: list[RemovableHandle] = []
        for name, stack in _stacks(model):
            self._hook_stack(name, stack)
        self.handles.append(model.register_forward_hook(self._on_model_output))

    def _on_model_output(
        self, module: nn.Module, args: tuple[object, ...], output: ModelOutput
    ) -> None:
        self.record.output = output

    def _add(self, handle: RemovableHandle) -> None:
        self.handles.append(handle)

    def _hook_stack(self, name: str, stack: TransformerStack) -> None:
        def reset(module: nn.Module, args: tuple[object, ...]) -> None:
            self.record.stacks[name] = StackRecord(layers=[LayerRecord() for _ in stack.blocks])

        def current() -> StackRecord:
            return self.record.stacks[name]

        self._add(stack.register_forward_pre_hook(reset))
        self._add(stack.embeddings.register_forward_hook(self._embedding_hook(current)))
        if stack.final_norm is not None:
            self._add(stack.final_norm.register_forward_hook(_store(current, "final_norm")))
        for index, block in enumerate(stack.blocks):
            self._hook_block(block, lambda i=index: current().layers[i])

    def _embedding_hook(self, current: Callable[[], StackRecord]) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            input_ids, position_ids, token_type_ids = args
            rec = current()
            rec.input_ids, rec.position_ids, rec.embedded = input_ids, position_ids, output.detach()
            # The model sums these parts without keeping them: re-derive each from its module.
            with torch.no_grad():
                rec.token_embeddings = module.tokens(input_ids)
                total = rec.token_embeddings
                if module.segments is not None:
                    ids = (
                        token_type_ids
                        if token_type_ids is not None
                        else torch.zeros_like(input_ids)
                    )
                    rec.segment_embeddings = module.segments(ids)
                    total = total + rec.segment_embeddings
                rec.position_encodings = module.positions.add(torch.zeros_like(total), position_ids)
                rec.embedding_sum = total + rec.position_encodings
                rotation = module.positions.rotation(position_ids)  # rotary: cos, sin
                if rotation is not None:
                    rec.rotary_cos = rotation[0][:, 0]  # (B, 1, T, hd) -> (B, T, hd)

        return hook

    def _hook_block(self, block: TransformerBlock, layer: Callable[[], LayerRecord]) -> None:
        def block_input(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            layer().residual["input"] = args[0].detach()

        def block_output(module: nn.Module, args: tuple[object, ...], output: BlockOutput) -> None:
            rec = layer()
            names = [name for name, _ in _sublayers(block)]
            for i, name in enumerate(names):
                if i == len(names) - 1:
                    rec.residual[name] = output.hidden.detach()
                elif block.parallel:  # the feed-forward read the input: add attention's output
                    rec.residual[name] = rec.residual["input"] + rec._stream["attention_output"]
                elif block.pre_norm:  # the stream after sub-layer i is what norm i + 1 reads
                    rec.residual[name] = rec._stream[names[i + 1]]
                else:  # post-norm: the stream after sub-layer i is norm i's output
                    rec.residual[name] = rec._stream[name]
            rec._stream.clear()

        self._add(block.register_forward_pre_hook(block_input))
        self._add(block.register_forward_hook(block_output))
        for name, norm in _sublayers(block):
            self._add(norm.register_forward_hook(_stream_hook(layer, name, block.pre_norm)))
        self._hook_attention(block.self_attn, layer, "self_attention")
        if block.parallel:

            def attention_output(
                module: nn.Module, args: tuple[object, ...], output: tuple[Tensor, Tensor]
            ) -> None:
                layer()._stream["attention_output"] = output[0].detach()

            self._add(block.self_attn.register_forward_hook(attention_output))
        if block.cross_attn is not None:
            self._hook_attention(block.cross_attn, layer, "cross_attention")

        def ffn_hidden(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            layer().ffn_activation = args[0].detach()

        self._add(block.ffn.down.register_forward_pre_hook(ffn_hidden))

    def _hook_attention(
        self, attention: MultiHeadAttention, layer: Callable[[], LayerRecord], attribute: str
    ) -> None:
        def ask_for_weights(
            module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]
        ) -> tuple[tuple[object, ...], dict[str, object]]:
            return args, {**kwargs, "need_weights": True}

        def keep_weights(
            module: nn.Module, args: tuple[object, ...], output: tuple[Tensor, Tensor]
        ) -> None:
            setattr(layer(), attribute, output[1].detach())

        self._add(attention.register_forward_pre_hook(ask_for_weights, with_kwargs=True))
        self._add(attention.register_forward_hook(keep_weights))


def _store(current: Callable[[], StackRecord], attribute: str) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple[object, ...], output: Tensor) -> None:
        setattr(current(), attribute, output.detach())

    return hook


def _stream_hook(
    layer: Callable[[], LayerRecord], name: str, pre_norm: bool
) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        layer()._stream[name] = (args[0] if pre_norm else output).detach()

    return hook


@contextlib.contextmanager
def capture(model: nn.Module) -> Iterator[Capture]:
    """Record every stage of the forward passes run inside the block.

    >>> with capture(model) as seen:
    ...     model(ids)
    >>> seen["decoder"].layers[0].self_attention.shape  # (B, H, T, T)

    Each stack's record is reset when that stack runs again, so after several passes the
    record describes the last one. The stacks keep the padded layout while observed (the
    hooks read (B, T, ...) tensors). Hooks are removed and layouts restored on exit, even
    after an exception.
    """
    record = Capture()
    stacks = [stack for _, stack in _stacks(model)]
    padding_free = [stack.padding_free for stack in stacks]
    for stack in stacks:
        stack.padding_free = False
    recorder = _Recorder(model, record)
    try:
        yield record
    finally:
        for handle in recorder.handles:
            handle.remove()
        for stack, value in zip(stacks, padding_free, strict=True):
            stack.padding_free = value


def residual_norms(record: StackRecord) -> tuple[list[str], Tensor]:
    """Length of each token's residual-stream vector (batch row 0) at every stage, in order:
    entering the first block ("embeddings"), then after each sub-layer of each block
    ("0:self_attn", "0:ffn", ...). Returns the stage labels and a (n_stages, T) tensor."""
    stages = [("embeddings", record.layers[0].residual["input"])] if record.layers else []
    for index, layer in enumerate(record.layers):
        stages += [(f"{index}:{name}", t) for name, t in layer.residual.items() if name != "input"]
    norms = torch.stack([stream[0].float().norm(dim=-1) for _, stream in stages])
    return [label for label, _ in stages], norms
