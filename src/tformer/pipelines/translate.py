"""Translation with an encoder-decoder: lines of text (or token lists) -> decoded outputs.

Sources are right-padded: the encoder's padding mask makes the side irrelevant to the result,
and positions then start at 0 as in training. Decoding is `tformer.generation.generate`, so
every option it takes (beams, sampling, max_new_tokens...) passes straight through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from tformer.data.collate import pad, padding_mask
from tformer.errors import InputError
from tformer.generation import generate
from tformer.generation.text import end_token_ids, until_end
from tformer.models import EncoderDecoder, TformerModel
from tformer.tokenizer import Tokenizer


def require_encoder_decoder(model: TformerModel, task: str) -> EncoderDecoder:
    if not isinstance(model, EncoderDecoder):
        raise InputError(f"{task} needs an encoder-decoder model, not a {type(model).__name__}")
    return model


@torch.no_grad()
def decode_sources(
    model: TformerModel,
    sources: Sequence[Sequence[int]],
    *,
    batch_size: int = 100,
    progress: bool = False,
    **options: Any,
) -> list[list[int]]:
    """Each source's generated tokens, cut at EOS, decoded `batch_size` sources at a time
    (batches follow the given order: sort by length first for less padding); `progress`
    shows a bar of the sources done (on stderr), for long evaluations.

    The sources of an encoder-decoder are right-padded; the prompts of a decoder-only LM are
    left-padded (`left_pad`), so that each continues from its own last token.
    """
    model.eval()
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size} must be >= 1")
    device = next(model.parameters()).device
    end_ids = end_token_ids(model.config)
    left = not isinstance(model, EncoderDecoder)
    outputs: list[list[int]] = []
    bar = tqdm(total=len(sources), unit="example", desc="decoding", disable=not progress)
    for start in range(0, len(sources), batch_size):
        chunk = [list(s) for s in sources[start : start + batch_size]]
        ids = pad(chunk, model.config.pad_id or 0, left=left).to(device)  # (B, S_max)
        mask = padding_mask(chunk, left=left).to(device)
        new = generate(model, ids, mask, **options)  # (B, T_new)
        outputs += [until_end(row, end_ids) for row in new.tolist()]
        bar.update(len(chunk))
    bar.close()
    return outputs


def translate(
    model: TformerModel,
    tokenizer: Tokenizer,
    lines: Sequence[str],
    *,
    batch_size: int = 16,
    **options: Any,
) -> list[str]:
    """One output per line, in input order; lines are decoded in length-sorted batches.

    Empty lines give empty outputs; a line longer than the model's context is an error, raised
    before any decoding, so no work is thrown away.
    """
    require_encoder_decoder(model, "translation")
    sources = [tokenizer.encode(line) if line.strip() else [] for line in lines]
    limit = model.config.max_seq_len
    too_long = [i for i, source in enumerate(sources) if len(source) > limit]
    if too_long:
        first = too_long[0]
        raise InputError(
            f"input line {first + 1} has {len(sources[first])} tokens but the model's context "
            f"is max_seq_len={limit} ({len(too_long)} line(s) too long); shorten or split them"
        )
    order = sorted((i for i, s in enumerate(sources) if s), key=lambda i: len(sources[i]))
    decoded = decode_sources(model, [sources[i] for i in order], batch_size=batch_size, **options)
    outputs = [""] * len(lines)
    for i, ids in zip(order, decoded, strict=True):
        outputs[i] = tokenizer.decode(ids)
    return outputs
