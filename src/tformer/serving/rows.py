"""One row of a running batch: how it picks its tokens and when it is done.

Every request brings its own decoding options (temperature, top_p, seed, stop strings...), so
the scheduler's batch mixes rows that decode differently. A `Row` applies its request's
options to its own slice of the batch's logits with the same processors and the same pick
rule as `tformer.generation.generate`, so a request's tokens do not depend on its neighbours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tformer.generation.config import GenerationConfig
from tformer.generation.processors import apply_processors, sampling_processors
from tformer.generation.sampling import make_generator, pick_tokens
from tformer.generation.stopping import StopStrings
from tformer.tokenizer import Tokenizer

STOP, LENGTH = "stop", "length"  # OpenAI's finish reasons


@dataclass(frozen=True)
class TokenEvent:
    """A new token of choice `choice`; `finish` is set on a row's last token: "stop" (an
    end-of-sequence token or a stop string) or "length" (max_new_tokens reached)."""

    choice: int
    token: int
    finish: str | None = None


@dataclass(frozen=True)
class FailedEvent:
    """The request could not be completed (shutdown or a bug); `message` says why."""

    message: str


Event = TokenEvent | FailedEvent


@dataclass
class Job:
    """A request as the scheduler sees it: prompt ids, how to decode, how many choices.

    `emit` is called from the scheduler's thread with each `Event` (it must not block);
    `cancel()` may be called from any thread: the job's rows leave at the next step.
    """

    prompt: list[int]
    config: GenerationConfig
    emit: Callable[[Event], None]
    n: int = 1
    _cancelled: bool = field(default=False, repr=False)

    def cancel(self) -> None:
        self._cancelled = True  # a bool write is atomic: read by the scheduler thread

    @property
    def cancelled(self) -> bool:
        return self._cancelled


class Row:
    """One choice of one job while it decodes: its sampler, its tokens, its stop rules."""

    def __init__(self, job: Job, choice: int, tokenizer: Tokenizer, device: torch.device):
        self.job, self.choice = job, choice
        config = job.config
        self.processors = sampling_processors(config)
        self.generator = make_generator(config, device, offset=choice)
        self.eos = set(config.eos_token_ids or ())
        self.stop = StopStrings(tokenizer, config.stop_strings) if config.stop_strings else None
        self.max_new_tokens = config.max_new_tokens
        self.generated: list[int] = []
        self.finished = False

    def pick(self, logits: Tensor) -> int:
        """The next token from this row's (V,) logits."""
        scores = apply_processors(logits.float()[None], self.processors)
        return int(pick_tokens(scores, self.generator)[0])

    def add(self, token: int) -> TokenEvent:
        """Record `token`; the row finishes on EOS, a stop string or its last allowed token.
        Returns the event for the job (the scheduler sends it once its books are kept)."""
        self.generated.append(token)
        stopped = self.stop is not None and bool(self.stop(self._tail(self.stop.window))[0])
        finish = None
        if token in self.eos or stopped:
            finish = STOP
        elif len(self.generated) >= self.max_new_tokens:
            finish = LENGTH
        self.finished = finish is not None
        return TokenEvent(self.choice, token, finish)

    def _tail(self, count: int) -> Tensor:
        """(1, <= count) the last tokens: all a stop string can be found in, so the check
        costs the same at every step rather than growing with the answer."""
        return torch.tensor([self.generated[-count:]])

    def tell(self, event: TokenEvent) -> None:
        self.job.emit(event)
