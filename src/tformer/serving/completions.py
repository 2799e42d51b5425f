"""From an HTTP request's prompts to the scheduler and back: whole responses or SSE chunks.

Chat and text completions differ only in their JSON (a `message` or a `text`, a `delta` or
a `text` in chunks, their `object` names), so one path serves both with a `Shape` each.
The scheduler's thread hands events over to the request's event loop through an
`asyncio.Queue` (`loop.call_soon_threadsafe`), so no route ever blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from tformer.generation.config import GenerationConfig
from tformer.serving.errors import ApiError
from tformer.serving.rows import Event, FailedEvent, Job, TokenEvent
from tformer.serving.scheduler import Busy, Scheduler
from tformer.serving.text import ChoiceText
from tformer.tokenizer import Tokenizer

DISCONNECT_POLL_S = 0.5  # how often a waiting (non-streamed) request checks its client


@dataclass(frozen=True)
class Shape:
    """How one kind of completion looks in JSON."""

    id_prefix: str
    object: str
    chunk_object: str
    chat: bool

    def choice(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": None}
        if self.chat:
            body["message"] = {"role": "assistant", "content": text}
        else:
            body["text"] = text
        return body

    def delta(self, index: int, text: str | None, finish: str | None) -> dict[str, Any]:
        """A chunk's choice: new text (chat: the first one also says the role)."""
        body: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": None}
        if self.chat:
            body["delta"] = {"role": "assistant", "content": ""} if text is None else {}
            if text:
                body["delta"]["content"] = text
        else:
            body["text"] = text or ""
        return body


CHAT = Shape("chatcmpl-", "chat.completion", "chat.completion.chunk", chat=True)
TEXT = Shape("cmpl-", "text_completion", "text_completion", chat=False)


class Submission:
    """The jobs of one HTTP request (one per prompt, each with `n` choices) and the queue
    their events arrive on. Choice numbers run prompt by prompt: prompt p's choice i is
    p * n + i, as OpenAI numbers a batch of prompts."""

    def __init__(
        self, scheduler: Scheduler, prompts: list[list[int]], config: GenerationConfig, n: int
    ) -> None:
        self.n, self.prompt_tokens = n, sum(map(len, prompts))
        self.choices = len(prompts) * n
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self.jobs: list[Job] = []
        for p, prompt in enumerate(prompts):
            job = Job(prompt, config, emit=self._emitter(p), n=n)
            try:
                scheduler.submit(job)
            except Busy as error:
                self.cancel()
                raise ApiError(
                    429, f"the server is busy: {error}", code="server_busy",
                    headers={"Retry-After": "1"},
                ) from None  # fmt: skip
            self.jobs.append(job)

    def _emitter(self, prompt_index: int) -> Callable[[Event], None]:
        def emit(event: Event) -> None:  # runs on the scheduler's thread
            with contextlib.suppress(RuntimeError):  # a closed loop: the server is stopping
                self._loop.call_soon_threadsafe(self._queue.put_nowait, (prompt_index, event))

        return emit

    def cancel(self) -> None:
        """Free the request's rows (a no-op for those that finished)."""
        for job in self.jobs:
            job.cancel()

    async def events(self, request: Request | None) -> AsyncIterator[tuple[int, TokenEvent]]:
        """(choice, event) until every choice has finished. With `request`, a client that
        disconnects cancels the jobs (a stream learns it from its response instead)."""
        remaining = self.choices
        while remaining:
            try:
                prompt_index, event = await asyncio.wait_for(
                    self._queue.get(), DISCONNECT_POLL_S if request is not None else None
                )
            except TimeoutError:
                if request is not None and await request.is_disconnected():
                    self.cancel()
                    return
                continue
            if isinstance(event, FailedEvent):
                self.cancel()
                raise ApiError(500, event.message)
            if event.finish is not None:
                remaining -= 1
            yield prompt_index * self.n + event.choice, event


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class Completion:
    """One request's answer, whole (`respond`) or streamed as server-sent events (`stream`)."""

    def __init__(
        self,
        submission: Submission,
        shape: Shape,
        tokenizer: Tokenizer,
        model_name: str,
        stop_strings: tuple[str, ...],
    ) -> None:
        self.submission, self.shape, self.model_name = submission, shape, model_name
        self.texts = [ChoiceText(tokenizer, stop_strings) for _ in range(submission.choices)]
        self.id = f"{shape.id_prefix}{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.completion_tokens = 0

    def _header(self, object_name: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": object_name,
            "created": self.created,
            "model": self.model_name,
        }

    def _take(self, choice: int, event: TokenEvent) -> str:
        """The text `event` adds to its choice (all of the rest on its last token)."""
        self.completion_tokens += 1
        text = self.texts[choice].push(event.token)
        return text + self.texts[choice].finish() if event.finish is not None else text

    async def respond(self, request: Request) -> dict[str, Any]:
        texts = [""] * self.submission.choices
        finish: list[str | None] = [None] * self.submission.choices
        try:
            async for choice, event in self.submission.events(request):
                texts[choice] += self._take(choice, event)
                finish[choice] = event.finish
        finally:
            self.submission.cancel()
        choices = [
            self.shape.choice(i, t, f) for i, (t, f) in enumerate(zip(texts, finish, strict=True))
        ]
        usage = _usage(self.submission.prompt_tokens, self.completion_tokens)
        return {**self._header(self.shape.object), "choices": choices, "usage": usage}

    async def stream(self, include_usage: bool) -> AsyncIterator[str]:
        """SSE lines: a chunk per piece of text, one with each finish reason, [DONE]."""
        try:
            if self.shape.chat:  # the role comes first, as OpenAI streams it
                for i in range(self.submission.choices):
                    yield self._chunk([self.shape.delta(i, None, None)])
            async for choice, event in self.submission.events(None):
                text = self._take(choice, event)
                if text:
                    yield self._chunk([self.shape.delta(choice, text, None)])
                if event.finish is not None:
                    yield self._chunk([self.shape.delta(choice, "", event.finish)])
            if include_usage:
                usage = _usage(self.submission.prompt_tokens, self.completion_tokens)
                yield self._chunk([], usage=usage)
        except ApiError as error:  # the status line is sent already: report it in-band
            yield f"data: {json.dumps(error.body())}\n\n"
        finally:
            self.submission.cancel()  # also when the client went away mid-stream
        yield "data: [DONE]\n\n"

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {**self._header(self.shape.chunk_object), "choices": choices, **extra}
        return f"data: {json.dumps(body)}\n\n"
