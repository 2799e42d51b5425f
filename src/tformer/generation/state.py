"""DecodingState: the sequences being decoded and the model calls that extend them.

Both families decode the same way once set up: a decoder-only LM continues its (left-padded)
prompt; an encoder-decoder encodes the source once and continues from the start token while
attending to the encoder output. Everything else -- KV cache or recomputation, static cache,
beam reordering -- is shared.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from tformer.generation.compiled import decode_step, step_capacity
from tformer.generation.config import GenerationConfig
from tformer.models import DecoderOnlyLM, EncoderDecoder
from tformer.modules.kv_cache import KVCache

# attention sees distances, not absolute positions
RELATIVE_POSITIONS = ("rotary", "relative", "none")


def position_ids_from_mask(mask: Tensor) -> Tensor:
    """(N, T) 1/0 padding mask -> (N, T) positions counting real tokens only.

    Left padding shifts a prompt right; its first real token must still get position 0, or
    learned/rotary positions differ from the same prompt decoded alone. Padding gets 0.
    """
    return (mask.long().cumsum(dim=-1) - 1).clamp(min=0)


class DecodingState:
    """Token buffer (N, prompt + max_new_tokens), its padding mask, and the KV cache.

    `prefill` runs the prompt and returns the next-token logits (N, V); `advance` appends one
    token per row and returns the logits after it; `verify` appends a token and proposals for
    the ones after it and keeps those greedy decoding agrees with (speculative decoding);
    `reorder` keeps/duplicates rows (beams).

    Past the context: a decoder-only model whose rows fill its `max_seq_len` slots keeps
    decoding over a sliding window. The oldest quarter of the window is dropped and decoding
    goes on from the newest three quarters: with rotary (or no) positions, which only see
    distances, the cache just forgets the dropped slots (a rolling cache); with learned or
    sinusoidal positions, which must start at 0, the kept tokens are encoded again (as
    nanoGPT's sampler crops its context, done every max_seq_len/4 tokens rather than at every
    token so the cache serves the steps in between). While everything fits, nothing of this
    runs.
    """

    def __init__(
        self,
        model: DecoderOnlyLM | EncoderDecoder,
        input_ids: Tensor,
        attention_mask: Tensor,
        config: GenerationConfig,
    ) -> None:
        self.model = model
        self.inputs = (input_ids, attention_mask)  # as given: a draft model starts from them
        self.context: Tensor | None = None
        self.context_mask: Tensor | None = None
        self.source: Tensor | None = None  # an encoder-decoder's input_ids (N, S)
        prompt, prompt_mask = input_ids, attention_mask
        if isinstance(model, EncoderDecoder):
            self.context = model.encode(input_ids, attention_mask)  # (N, S, d_model)
            self.context_mask, self.source = attention_mask, input_ids
            start = model.config.start_id
            assert start is not None  # checked by the caller
            prompt = input_ids.new_full((input_ids.shape[0], 1), start)
            prompt_mask = torch.ones_like(prompt)
        batch, self.prompt_len = prompt.shape
        self.length = self.prompt_len
        self.window_start = 0  # the token column held in the cache's first slot
        width = self.prompt_len + config.max_new_tokens
        if config.compile_step:  # a static cache of a power of two: one step serves many
            width = step_capacity(width, model.config.max_seq_len)
        self.tokens = prompt.new_zeros((batch, width))
        self.tokens[:, : self.prompt_len] = prompt
        self.mask = torch.zeros_like(self.tokens)
        self.mask[:, : self.prompt_len] = prompt_mask
        self.padded = not bool(prompt_mask.all())
        self.next_position = position_ids_from_mask(prompt_mask)[:, -1] + 1  # (N,)
        self.cache: KVCache | None = model.new_cache() if config.use_cache else None
        self.static_cache = config.static_cache or config.compile_step
        self._step: Callable[..., Tensor] = self._forward
        if config.compile_step:
            self._step = decode_step(model, self._forward)

    @property
    def generated(self) -> Tensor:
        """(N, t) the tokens added so far."""
        return self.tokens[:, self.prompt_len : self.length]

    def _forward(
        self, ids: Tensor, mask: Tensor | None, positions: Tensor, cache: KVCache | None
    ) -> Tensor:
        """ids (N, T) -> logits (N, V) at the last position."""
        return self._logits(ids, mask, positions, cache, keep=1)[:, -1]

    def _logits(
        self, ids: Tensor, mask: Tensor | None, positions: Tensor, cache: KVCache | None, keep: int
    ) -> Tensor:
        """ids (N, T) -> logits (N, keep, V) at the last `keep` positions."""
        if self.context is None:
            out = self.model(
                ids, attention_mask=mask, position_ids=positions, cache=cache, logits_to_keep=keep
            )
        else:
            assert isinstance(self.model, EncoderDecoder)
            out = self.model.decode(
                ids,
                self.context,
                attention_mask=self.context_mask,
                decoder_attention_mask=mask,
                decoder_position_ids=positions,
                cache=cache,
                logits_to_keep=keep,
            )
        assert out.logits is not None
        return out.logits

    def _window_mask(self) -> Tensor | None:
        """The padding mask of the positions in the window; None when nothing is padding."""
        return self.mask[:, self.window_start : self.length] if self.padded else None

    def _encode_window(self, cache: KVCache | None) -> Tensor:
        """Run every token of the window from scratch (into `cache`); (N, V) next logits."""
        mask = self.mask[:, self.window_start : self.length]
        ids = self.tokens[:, self.window_start : self.length]
        positions = position_ids_from_mask(mask)
        self.next_position = positions[:, -1] + 1
        return self._forward(ids, self._window_mask(), positions, cache)

    def prefill(self) -> Tensor:
        """Run the prompt; (N, V) logits for the first new token."""
        return self._encode_window(self.cache)

    def _append(self, tokens: Tensor) -> Tensor:
        """Write tokens (N, m) after every row's last one; their position ids (N, m)."""
        count = tokens.shape[1]
        self.tokens[:, self.length : self.length + count] = tokens
        self.mask[:, self.length : self.length + count] = 1
        self.length += count
        offsets = torch.arange(count, device=tokens.device)
        positions = self.next_position[:, None] + offsets  # (N, m)
        self.next_position = self.next_position + count
        return positions

    def advance(self, next_tokens: Tensor) -> Tensor:
        """Append next_tokens (N,); (N, V) logits for the token after them."""
        positions = self._append(next_tokens[:, None])  # (N, 1)
        full = self.length - self.window_start > self.model.config.max_seq_len
        if full and self._slide():  # the kept tokens are encoded again, the new one with them
            return self._encode_window(self.cache)
        if self.cache is None:  # recompute everything: the no-cache baseline
            return self._encode_window(None)
        if self.static_cache:
            if self.cache.capacity is None:  # after the prompt: one shape for every step
                self.cache.fix_capacity(self.tokens.shape[1])
            self.cache.reserve(1)
            return self._step(next_tokens[:, None], self.mask, positions, self.cache)
        return self._forward(next_tokens[:, None], self._window_mask(), positions, self.cache)

    def room(self) -> int:
        """How many more tokens the window takes before it slides."""
        return self.model.config.max_seq_len - (self.length - self.window_start)

    def history(self) -> list[Tensor]:
        """Each row's real tokens so far, (t_b,): an encoder-decoder's source, then the
        decoded ones (prompt included). What prompt lookup searches for earlier n-grams."""
        rows = []
        for b in range(self.tokens.shape[0]):
            row = self.tokens[b, : self.length][self.mask[b, : self.length].bool()]
            if self.source is not None and self.context_mask is not None:
                row = torch.cat((self.source[b][self.context_mask[b].bool()], row))
            rows.append(row)
        return rows

    def verify(
        self, next_tokens: Tensor, proposals: Tensor, active: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Append next_tokens (N,) and the proposals (N, k) that may follow them, and keep the
        longest run of proposals that greedy decoding would pick in every `active` (N,) row.

        One forward pass over the 1 + k tokens gives greedy's pick after each of them; the
        rejected tail leaves the buffer and the KV cache (`crop`), so the state is as if the
        kept tokens had been advanced one at a time. Rows keep one length: they accept the
        shortest run among them (rows that agreed further propose the rest again later).
        Returns the accepted tokens (N, a), a <= k, and the (N, V) logits after the last.
        """
        tokens = torch.cat((next_tokens[:, None], proposals), dim=1)  # (N, 1 + k)
        logits = self._run_appended(tokens, keep=tokens.shape[1])  # (N, 1 + k, V)
        picks = logits.float().argmax(dim=-1)  # (N, 1 + k): greedy's token after each one
        agree = (picks[:, :-1] == proposals) | ~active[:, None]
        accepted = int(agree.long().cumprod(dim=1).sum(dim=1).min())
        self.rewind(proposals.shape[1] - accepted)
        return proposals[:, :accepted], logits[:, accepted]

    def extend(self, tokens: Tensor) -> Tensor:
        """Append tokens (N, m) in one cached pass; (N, V) logits after the last of them."""
        return self._run_appended(tokens, keep=1)[:, -1]

    def _run_appended(self, tokens: Tensor, keep: int) -> Tensor:
        """Append tokens (N, m) and run them with the growing cache; (N, keep, V) logits."""
        assert self.cache is not None and not self.static_cache  # GenerationConfig checks
        assert tokens.shape[1] <= self.room(), "appended tokens must not make the window slide"
        positions = self._append(tokens)
        return self._logits(tokens, self._window_mask(), positions, self.cache, keep)

    def rewind(self, count: int) -> None:
        """Forget every row's last `count` tokens, in the buffer and in the KV cache."""
        if not count:
            return
        self.length -= count
        self.mask[:, self.length : self.length + count] = 0
        self.next_position = self.next_position - count
        assert self.cache is not None and self.cache.lengths is not None
        self.cache.crop(self.cache.lengths - count)

    def _slide(self) -> bool:
        """Drop the oldest quarter of a full window; True if the rest must be encoded again
        (positions that start at 0), False if the cache just forgets the dropped slots."""
        drop = max(1, self.model.config.max_seq_len // 4)
        self.window_start += drop
        if self.cache is not None and self.model.config.positional in RELATIVE_POSITIONS:
            self.cache.drop_oldest(drop)
            return False
        if self.cache is not None:
            self.cache = self.model.new_cache()
        return True

    def reorder(self, index: Tensor) -> None:
        """Keep rows `index` (N',) of every per-row tensor; repeats duplicate a row."""
        self.tokens, self.mask = self.tokens[index], self.mask[index]
        self.next_position = self.next_position[index]
        if self.context is not None and self.context_mask is not None:
            self.context, self.context_mask = self.context[index], self.context_mask[index]
        if self.source is not None:
            self.source = self.source[index]
        if self.cache is not None:
            self.cache.select(index)
