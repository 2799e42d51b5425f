"""The text of one choice as its tokens arrive, cut before a stop string.

OpenAI's API returns text without the stop sequence that ended it. While streaming, the last
len(longest stop) - 1 characters are held back, since they may be the start of a stop string
that the next tokens complete; the rest goes out as soon as it is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence

from tformer.generation.text import IncrementalText
from tformer.tokenizer import Tokenizer


class ChoiceText:
    def __init__(self, tokenizer: Tokenizer, stop_strings: Sequence[str] = ()) -> None:
        self._text = IncrementalText(tokenizer)
        self.stop_strings = tuple(stop_strings)
        self._hold = max((len(s) for s in self.stop_strings), default=1) - 1
        self._pending = ""  # decoded, not yet given out
        self.stopped = False  # a stop string was found: nothing more is given out

    def push(self, token: int) -> str:
        """Add a token; the text that can be given out now."""
        if self.stopped:
            return ""
        self._pending += self._text.push(token)
        return self._release(final=False)

    def finish(self) -> str:
        """The rest, once the choice has ended."""
        if self.stopped:
            return ""
        self._pending += self._text.flush()
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        hits = [i for i in (self._pending.find(s) for s in self.stop_strings) if i >= 0]
        if hits:
            self.stopped = True
            out, self._pending = self._pending[: min(hits)], ""
            return out
        ready = len(self._pending) - (0 if final else self._hold)
        if ready <= 0:
            return ""
        out, self._pending = self._pending[:ready], self._pending[ready:]
        return out
