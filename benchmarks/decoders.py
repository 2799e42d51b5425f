"""The contenders of the generation cases: one `Generator` entry each in `GENERATORS`.

Every contender decodes the same token ids greedily with EOS disabled, so each row gets
exactly N new tokens, from the same weights. A loader gets (weights, prompts, most new
tokens) and returns `decode(n) -> (rows, n)` new tokens; loading, converting or quantising
the weights happens before, in the set-up, and is not timed. Adding a contender is one entry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

import tformer
from benchmarks.llamacpp import llama_cpp_decoder
from tformer.generation import generate, left_pad
from tformer.quantize import quantize_int4, quantize_int8


@dataclass(frozen=True)
class Weights:
    """One model's weights in the two forms the contenders read."""

    gguf: Path  # as published; llama.cpp computes with its quantised blocks
    float32: Path  # dequantised once per run into a Hugging Face directory (tformer, transformers)


Decode = Callable[[int], Tensor]  # n -> (rows, n) new tokens
Loader = Callable[[Weights, list[list[int]], int], Decode]


@dataclass(frozen=True)
class Ours:
    """tformer: how the loaded float32 model is prepared, and the `generate` options.

    Variants without options change the numbers the model computes (dtype, quantisation), so
    the generation cases check their perplexity against float32; options only change how the
    same numbers are computed (cache, compilation).
    """

    prepare: Callable[[nn.Module], nn.Module] | None = None
    options: dict[str, bool | int] = field(default_factory=dict)
    # a draft model for speculative decoding, made from a second copy of the weights
    draft: Callable[[nn.Module], nn.Module] | None = None

    def model(self, weights: Weights) -> nn.Module:
        model, _ = tformer.load(weights.float32)
        return (self.prepare(model) if self.prepare else model).eval()

    def __call__(self, weights: Weights, prompts: list[list[int]], max_new_tokens: int) -> Decode:
        model = self.model(weights)
        draft = self.draft(tformer.load(weights.float32)[0]).eval() if self.draft else None
        ids, mask = left_pad(prompts, pad_id=0)

        def decode(n: int) -> Tensor:
            options = {"max_new_tokens": n, "eos_token_id": [], **self.options}
            return generate(model, ids, mask, draft_model=draft, **options)  # type: ignore[arg-type]

        return decode


def to_bfloat16(model: nn.Module) -> nn.Module:
    return model.to(torch.bfloat16)


def transformers_decoder(
    weights: Weights, prompts: list[list[int]], max_new_tokens: int, **options: int
) -> Decode:
    """`generate()` of the model's transformers class (LlamaForCausalLM), float32, with
    `options` of its generate (e.g. prompt_lookup_num_tokens)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(weights.float32)  # stored as float32
    model.generation_config.eos_token_id = None  # exactly N new tokens
    model.generation_config.pad_token_id = 0
    model.eval()
    ids, mask = left_pad(prompts, pad_id=0)

    def decode(n: int) -> Tensor:
        out = model.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, **options)
        return out[:, ids.shape[1] :]

    return decode


def llama_cpp_greedy(weights: Weights, prompts: list[list[int]], max_new_tokens: int) -> Decode:
    return llama_cpp_decoder(weights.gguf, prompts, max_new_tokens)


@dataclass(frozen=True)
class Generator:
    """A contender: `load` builds its decode function (in the worker process)."""

    name: str
    load: Loader
    imports: tuple[str, ...] = ()  # a peer's library, imported before the memory baseline
    extra: str = ""  # the pip extra of tformer that installs `imports`


GENERATORS = (
    Generator(
        "transformers",
        transformers_decoder,
        imports=("transformers.models.llama.modeling_llama",),
        extra="dev",
    ),
    Generator("tformer", Ours()),
    Generator("tformer-bf16", Ours(prepare=to_bfloat16)),
    Generator("tformer-int8", Ours(prepare=quantize_int8)),
    Generator("tformer-int4", Ours(prepare=quantize_int4)),
    # int4 that keeps a dense copy for products of many rows (a prompt): `serve`'s layout
    Generator(
        "tformer-int4-many-rows", Ours(prepare=functools.partial(quantize_int4, many_rows=True))
    ),
    Generator("tformer-int4-compiled", Ours(prepare=quantize_int4, options={"compile_step": True})),
    Generator("tformer-static", Ours(options={"static_cache": True})),  # what compiling needs
    Generator("tformer-compiled", Ours(options={"compile_step": True})),  # static cache too
    Generator("llama.cpp", llama_cpp_greedy, imports=("llama_cpp",), extra="bench"),
)
# The baseline a KV cache must beat (by >= 5x at 256 new tokens): recompute every step.
NO_CACHE = Generator("tformer-nocache", Ours(options={"use_cache": False}))
# Speculation without a draft model, for an input-grounded prompt: ours and transformers'.
LOOKUP_TOKENS = 10  # transformers' documented example value
PROMPT_LOOKUP = (
    Generator("tformer-prompt-lookup", Ours(options={"prompt_lookup_tokens": LOOKUP_TOKENS})),
    Generator(
        "transformers-prompt-lookup",
        functools.partial(transformers_decoder, prompt_lookup_num_tokens=LOOKUP_TOKENS),
        imports=("transformers.models.llama.modeling_llama",),
        extra="dev",
    ),
)
# Speculation with the model's own int4 copy as the draft: float32's output, int4's passes.
DRAFT_TOKENS = 4
INT4_DRAFT = Generator(
    "tformer-int4-draft", Ours(options={"draft_tokens": DRAFT_TOKENS}, draft=quantize_int4)
)
BY_NAME = {g.name: g for g in (*GENERATORS, NO_CACHE, *PROMPT_LOOKUP, INT4_DRAFT)}
