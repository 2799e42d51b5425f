"""One decoding loop for decoder-only and encoder-decoder models.

>>> new_tokens = generate(model, input_ids, max_new_tokens=20)            # greedy
>>> new_tokens = generate(model, input_ids, max_new_tokens=20, top_p=0.9, seed=0)  # sampled
>>> new_tokens = generate(model, input_ids, config=GenerationConfig(max_new_tokens=20, num_beams=4))
>>> for tokens in stream(model, input_ids, max_new_tokens=20): ...       # (B,) per step

`input_ids` is the prompt of a decoder-only model (left-padded when batched, with its
`attention_mask`) or the source of an encoder-decoder, whose decoding starts from
`config.start_id`. The result holds only the new tokens, `pad_id` after a row's end.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from tformer.errors import InputError
from tformer.generation.beam import BeamSearchOutput, beam_search
from tformer.generation.config import GenerationConfig
from tformer.generation.draft import DraftProposer, check_draft
from tformer.generation.inputs import left_pad, prepare_inputs
from tformer.generation.sampling import sample_stream
from tformer.generation.state import DecodingState
from tformer.generation.stopping import StopStrings
from tformer.generation.text import stream_text
from tformer.models import TformerModel
from tformer.tokenizer import Tokenizer


def make_config(
    model: TformerModel, config: GenerationConfig | None = None, **overrides: object
) -> GenerationConfig:
    """`config` (or the defaults) with keyword `overrides` applied and the model's defaults
    filled in: no eos_token_ids means the model's eos_id; one id or one stop string may be
    given bare."""
    if "eos_token_id" in overrides:  # the familiar singular name, as in Hugging Face
        overrides["eos_token_ids"] = overrides.pop("eos_token_id")
    for name in ("eos_token_ids", "stop_strings"):
        value = overrides.get(name)
        if value is None:
            overrides.pop(name, None)
        elif isinstance(value, (int, str)):
            overrides[name] = (value,)
        else:
            overrides[name] = tuple(value)  # type: ignore[call-overload]
    if config is None:
        if "max_new_tokens" not in overrides:
            raise InputError("give max_new_tokens (or a GenerationConfig)")
        config = GenerationConfig(**overrides)  # type: ignore[arg-type]
    elif overrides:
        config = config.replace(**overrides)
    if config.eos_token_ids is None:
        eos = model.config.eos_id
        config = config.replace(eos_token_ids=() if eos is None else (eos,))
    return config


def _options(
    model: TformerModel,
    attention_mask: object,
    config: GenerationConfig | None,
    overrides: dict[str, object],
) -> GenerationConfig:
    """`make_config`, after catching the one easy slip: a config in the mask's place."""
    if isinstance(attention_mask, GenerationConfig):
        raise InputError("a GenerationConfig goes in config=, not in the attention_mask's place")
    return make_config(model, config, **overrides)


def _start(
    model: TformerModel,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    config: GenerationConfig,
) -> DecodingState:
    ids, mask = prepare_inputs(model, input_ids, attention_mask, config)
    return DecodingState(model, ids, mask, config)  # type: ignore[arg-type]  # family checked


def _pad_id(model: TformerModel, config: GenerationConfig) -> int:
    """What finished rows are filled with: pad_id, else the first EOS id, else 0."""
    if model.config.pad_id is not None:
        return model.config.pad_id
    return config.eos_token_ids[0] if config.eos_token_ids else 0  # type: ignore[index]


def _token_stream(
    model: TformerModel,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    config: GenerationConfig,
    tokenizer: Tokenizer | None,
    draft_model: TformerModel | None,
) -> Iterator[Tensor]:
    stop = StopStrings(tokenizer, config.stop_strings) if config.stop_strings else None
    state = _start(model, input_ids, attention_mask, config)
    propose = DraftProposer(draft_model, state, config) if draft_model is not None else None
    yield from sample_stream(
        state, config, pad_id=_pad_id(model, config), stop_strings=stop, propose=propose
    )


def _check_draft_options(
    model: TformerModel, config: GenerationConfig, draft_model: TformerModel | None
) -> None:
    if draft_model is None:
        if config.draft_tokens:
            raise InputError(f"draft_tokens={config.draft_tokens} needs a draft_model")
        return
    if not config.draft_tokens:
        raise InputError("a draft_model needs draft_tokens > 0 (tokens it proposes per pass)")
    check_draft(model, draft_model)


@torch.no_grad()  # not inference_mode: the tokens may feed a later training step
def stream(
    model: TformerModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    config: GenerationConfig | None = None,
    tokenizer: Tokenizer | None = None,
    draft_model: TformerModel | None = None,
    **overrides: object,
) -> Iterator[Tensor]:
    """Yield the next token of every row, (B,), as soon as it is chosen (greedy or sampled).

    Options are those of `generate` except beam search, whose best sequence is known only at
    the end. Use `stream_text` to turn one row's tokens into text as they arrive.
    """
    config = _options(model, attention_mask, config, overrides)
    if config.num_beams > 1:
        raise InputError("beam search cannot stream: its best sequence is known only at the end")
    _check_draft_options(model, config, draft_model)
    yield from _token_stream(model, input_ids, attention_mask, config, tokenizer, draft_model)


@torch.no_grad()  # not inference_mode: the tokens may feed a later training step
def generate(
    model: TformerModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    config: GenerationConfig | None = None,
    tokenizer: Tokenizer | None = None,
    draft_model: TformerModel | None = None,
    **overrides: object,
) -> Tensor:
    """New tokens (B * num_return_sequences, N) for prompts/sources `input_ids` (B, T).

    How to decode is one `GenerationConfig` (see its fields), or its fields as keyword
    `overrides` (`max_new_tokens=20, top_p=0.9, seed=0`), or both (the keywords win).
    N <= max_new_tokens: decoding stops once every row has finished. attention_mask (B, T):
    1 for tokens, 0 for (left) padding. No eos_token_ids means the model's eos_id.
    stop_strings need `tokenizer`. With num_beams > 1 rows come in groups of
    num_return_sequences per input, best first (`beam_search` also returns their scores).
    A decoder-only model continues past its context (max_seq_len) by sliding the window;
    see `DecodingState`. A `draft_model` (same vocabulary; with `draft_tokens=K`) proposes K
    tokens per pass for the model to check: the output stays plain greedy decoding's.
    """
    config = _options(model, attention_mask, config, overrides)
    _check_draft_options(model, config, draft_model)
    if config.num_beams > 1:
        if config.stop_strings:
            raise InputError("stop_strings are not supported with beam search; use eos_token_id")
        state = _start(model, input_ids, attention_mask, config)
        out = beam_search(state, config, pad_id=_pad_id(model, config))
        return out.sequences.flatten(0, 1)
    steps = _token_stream(model, input_ids, attention_mask, config, tokenizer, draft_model)
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
