"""One decoding loop for decoder-only and encoder-decoder models.

>>> new_tokens = generate(model, input_ids, max_new_tokens=20)            # greedy
>>> new_tokens = generate(model, input_ids, max_new_tokens=20, do_sample=True, top_p=0.9, seed=0)
>>> for tokens in stream(model, input_ids, max_new_tokens=20): ...       # (B,) per step

`input_ids` is the prompt of a decoder-only model (left-padded when batched, with its
`attention_mask`) or the source of an encoder-decoder, whose decoding starts from
`config.start_id`. The result holds only the new tokens, `pad_id` after a row's end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from tformer.generation.beam import BeamSearchOutput, beam_search
from tformer.generation.config import GenerationConfig
from tformer.generation.inputs import left_pad, prepare_inputs
from tformer.generation.sampling import sample_stream
from tformer.generation.state import DecodingState
from tformer.generation.stopping import StopStrings
from tformer.generation.text import stream_text
from tformer.models import TformerModel
from tformer.tokenizer import Tokenizer


def make_config(model: TformerModel, **options: object) -> GenerationConfig:
    """A GenerationConfig from keyword options; eos_token_id None -> the model's eos_id."""
    eos = options.pop("eos_token_id", None)
    if eos is None:
        eos = model.config.eos_id
    eos_ids = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)  # type: ignore[arg-type]
    stop = options.pop("stop_strings", None) or ()
    stop_strings = (stop,) if isinstance(stop, str) else tuple(stop)  # type: ignore[arg-type]
    return GenerationConfig(eos_token_ids=eos_ids, stop_strings=stop_strings, **options)  # type: ignore[arg-type]


def _start(
    model: TformerModel,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    config: GenerationConfig,
) -> DecodingState:
    ids, mask = prepare_inputs(model, input_ids, attention_mask, config.max_new_tokens)
    return DecodingState(
        model,  # type: ignore[arg-type]  # prepare_inputs checked the family
        ids,
        mask,
        max_new_tokens=config.max_new_tokens,
        use_cache=config.use_cache,
        static_cache=config.static_cache or config.compile_step,
        compile_step=config.compile_step,
    )


def _pad_id(model: TformerModel, config: GenerationConfig) -> int:
    """What finished rows are filled with: pad_id, else the first EOS id, else 0."""
    if model.config.pad_id is not None:
        return model.config.pad_id
    return config.eos_token_ids[0] if config.eos_token_ids else 0


def _token_stream(
    model: TformerModel,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    config: GenerationConfig,
    tokenizer: Tokenizer | None,
) -> Iterator[Tensor]:
    stop = StopStrings(tokenizer, config.stop_strings) if config.stop_strings else None
    state = _start(model, input_ids, attention_mask, config)
    yield from sample_stream(state, config, pad_id=_pad_id(model, config), stop_strings=stop)


@torch.no_grad()  # not inference_mode: the tokens may feed a later training step
def stream(
    model: TformerModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    tokenizer: Tokenizer | None = None,
    **options: object,
) -> Iterator[Tensor]:
    """Yield the next token of every row, (B,), as soon as it is chosen (greedy or sampled).

    Options are those of `generate` except beam search, whose best sequence is known only at
    the end. Use `stream_text` to turn one row's tokens into text as they arrive.
    """
    config = make_config(model, **options)
    if config.num_beams > 1:
        raise ValueError("beam search cannot stream: its best sequence is known only at the end")
    yield from _token_stream(model, input_ids, attention_mask, config, tokenizer)


@torch.no_grad()  # not inference_mode: the tokens may feed a later training step
def generate(
    model: TformerModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
    stop_strings: str | Sequence[str] | None = None,
    tokenizer: Tokenizer | None = None,
    seed: int | None = None,
    num_beams: int = 1,
    num_return_sequences: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    use_cache: bool = True,
    static_cache: bool = False,
    compile_step: bool = False,
) -> Tensor:
    """New tokens (B * num_return_sequences, N) for prompts/sources `input_ids` (B, T).

    N <= max_new_tokens: decoding stops once every row has finished. attention_mask (B, T):
    1 for tokens, 0 for (left) padding. eos_token_id None uses the model's eos_id.
    stop_strings need `tokenizer`. With num_beams > 1 rows come in groups of
    num_return_sequences per input, best first (`beam_search` also returns their scores).
    static_cache preallocates the KV cache (one shape for every step); compile_step also
    compiles the decode step with `torch.compile` (and implies static_cache).
    """
    config = make_config(
        model,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        eos_token_id=eos_token_id,
        stop_strings=stop_strings,
        seed=seed,
        num_beams=num_beams,
        num_return_sequences=num_return_sequences,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        use_cache=use_cache,
        static_cache=static_cache,
        compile_step=compile_step,
    )
    if config.num_beams > 1:
        if config.stop_strings:
            raise ValueError("stop_strings are not supported with beam search; use eos_token_id")
        state = _start(model, input_ids, attention_mask, config)
        out = beam_search(state, config, pad_id=_pad_id(model, config))
        return out.sequences.flatten(0, 1)
    steps = _token_stream(model, input_ids, attention_mask, config, tokenizer)
    return torch.stack(list(steps), dim=1)


__all__ = [
    "BeamSearchOutput",
    "DecodingState",
    "GenerationConfig",
    "generate",
    "left_pad",
    "stream",
    "stream_text",
]
