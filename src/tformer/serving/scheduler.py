"""Continuous batching: one thread owns the model and decodes every request's rows together.

A request waits in a bounded queue until the batch has room for its rows (`max_batch`).
Between two decode steps at most `prefill_chunk` prompt tokens run: the prompts that arrived
together and fit go through the model in one pass, and a longer prompt is prefilled alone
into a KV cache of its own, a chunk per step, so it does not stall the rows already
decoding. When a prompt is in, its rows (one per choice) join the running batch
(`KVCache.extend`) and from the next step on every row advances by one token per forward
pass. A finished or cancelled row leaves the batch (`KVCache.select`) without stopping the
others.

No row is padded: the batch cache keeps each row's own length, and a row's next position is
its length. So a request's tokens are those it would get decoding alone (up to the float
rounding of a different batch size); the tests hold greedy output to that.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tformer.errors import TformerError
from tformer.models import DecoderOnlyLM
from tformer.modules.kv_cache import KVCache
from tformer.serving.rows import FailedEvent, Job, Row
from tformer.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class Busy(TformerError):
    """The queue of waiting requests is full: the client should retry later (HTTP 429)."""


@dataclass
class _Prefill:
    """A job whose prompt is going into its own cache, `done` tokens so far."""

    job: Job
    cache: KVCache | None = None  # made when a long prompt's first chunk runs
    done: int = 0


class Scheduler:
    """Runs jobs (`submit`) on `model` in a background thread (`start` ... `close`)."""

    def __init__(
        self,
        model: DecoderOnlyLM,
        tokenizer: Tokenizer,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
        prefill_chunk: int = 256,
        threads: int | None = None,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_queue, self.prefill_chunk = max_batch, max_queue, prefill_chunk
        self.threads = threads or torch.get_num_threads()
        self.device = next(model.parameters()).device
        self._waiting: deque[Job] = deque()
        self._prefilling: deque[_Prefill] = deque()
        self._rows: list[Row] = []
        self._cache = model.new_cache()
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="tformer-scheduler", daemon=True)

    # ---- the other threads' side ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop after the current step; every job not finished gets a `FailedEvent`."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join()

    def submit(self, job: Job) -> None:
        """Queue `job`; raises `Busy` when `max_queue` jobs are waiting already."""
        if not 1 <= job.n <= self.max_batch:
            raise TformerError(f"n={job.n} choices do not fit a batch of {self.max_batch} rows")
        with self._wake:
            if self._closing:
                raise Busy("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise Busy(f"{len(self._waiting)} requests are waiting already; retry later")
            self._waiting.append(job)
            self._wake.notify()

    def load(self) -> dict[str, int]:
        """Rows decoding, prompts prefilling and requests waiting now (for /health)."""
        return {
            "decoding": len(self._rows),
            "prefilling": len(self._prefilling),
            "waiting": len(self._waiting),
        }

    # ---- the scheduler thread ---------------------------------------------------------------

    def _run(self) -> None:
        torch.set_num_threads(self.threads)  # intra-op threads are set per calling thread
        with torch.inference_mode():
            while self._next_round():
                try:
                    self._drop_cancelled()
                    self._admit()
                    self._prefill()
                    self._step()
                except Exception:  # a bug: fail the jobs in flight, keep serving the rest
                    log.exception("decoding failed")
                    self._fail_all("internal error while decoding; see the server log")
        self._fail_all("the server is shutting down")

    def _next_round(self) -> bool:
        """Wait until there is work; False once closing."""
        with self._wake:
            while not (self._closing or self._waiting or self._prefilling or self._rows):
                self._wake.wait()
            return not self._closing

    def _reserved(self) -> int:
        """Batch rows in use or promised to prompts being prefilled."""
        return len(self._rows) + sum(p.job.n for p in self._prefilling)

    def _admit(self) -> None:
        """Start prefilling waiting jobs, oldest first, while their rows fit the batch."""
        with self._wake:
            while self._waiting and self._reserved() + self._waiting[0].n <= self.max_batch:
                job = self._waiting.popleft()
                self._prefilling.append(_Prefill(job))

    def _prefill(self) -> None:
        """Run up to `prefill_chunk` prompt tokens; finished prompts join the batch.

        Whole prompts that fit the budget go through the model together, right-padded: with
        causal attention a real token never sees the padding after it, whose cache slots
        are then cropped away. A longer prompt goes on alone, a chunk at a time.
        """
        group: list[_Prefill] = []
        room = self.prefill_chunk
        while self._prefilling and self._prefilling[0].done == 0:
            length = len(self._prefilling[0].job.prompt)
            if length > room:
                break
            group.append(self._prefilling.popleft())
            room -= length
        if group:
            self._prefill_together(group)
        elif self._prefilling:
            self._prefill_chunk(self._prefilling[0], self.prefill_chunk)

    def _prefill_together(self, group: list[_Prefill]) -> None:
        """Whole prompts in one forward pass (B, longest); they all join the batch."""
        lengths = [len(p.job.prompt) for p in group]
        ids = torch.zeros((len(group), max(lengths)), dtype=torch.long, device=self.device)
        for row, prefill in enumerate(group):
            ids[row, : lengths[row]] = torch.tensor(prefill.job.prompt, device=self.device)
        cache = self.model.new_cache()
        last = torch.tensor(lengths, device=self.device) - 1
        out = self.model(ids, cache=cache, logits_to_keep=last)
        cache.crop(last + 1)
        assert out.logits is not None
        self._join([p.job for p in group], cache, out.logits[:, -1])

    def _prefill_chunk(self, prefill: _Prefill, budget: int) -> None:
        """The next chunk of one long prompt, into its own cache; it joins once complete."""
        prompt = prefill.job.prompt
        if prefill.cache is None:
            prefill.cache = self.model.new_cache()
        count = min(budget, len(prompt) - prefill.done)
        chunk = torch.tensor([prompt[prefill.done : prefill.done + count]], device=self.device)
        out = self.model(chunk, cache=prefill.cache, logits_to_keep=1)
        prefill.done += count
        if prefill.done == len(prompt):
            self._prefilling.popleft()
            assert out.logits is not None
            self._join([prefill.job], prefill.cache, out.logits[:, -1])

    def _join(self, jobs: list[Job], cache: KVCache, logits: torch.Tensor) -> None:
        """The first tokens of `jobs` from their prompts' last logits (J, V); their
        unfinished rows join the running batch, each choice with a copy of its prompt's
        cache row (`cache` holds one row per job)."""
        index, events = [], []
        for j, job in enumerate(jobs):
            rows = [Row(job, i, self.tokenizer, self.device) for i in range(job.n)]
            events += [(row, row.add(row.pick(logits[j]))) for row in rows]
            going = [row for row in rows if not row.finished]
            self._rows.extend(going)
            index += [j] * len(going)
        if index:
            cache.select(torch.tensor(index, device=self.device))
            self._cache.extend(cache)
        for row, event in events:  # once the batch holds the rows (what /health counts)
            row.tell(event)

    def _step(self) -> None:
        """One token for every running row; finished rows leave."""
        if not self._rows:
            return
        ids = torch.tensor([[row.generated[-1]] for row in self._rows], device=self.device)
        out = self.model(ids, cache=self._cache, logits_to_keep=1)
        assert out.logits is not None
        logits = out.logits[:, -1]  # (B, V)
        events = [(row, row.add(row.pick(logits[b]))) for b, row in enumerate(self._rows)]
        self._keep(lambda row: not row.finished)
        for row, event in events:  # finished rows have left the batch by now
            row.tell(event)

    def _drop_cancelled(self) -> None:
        """Rows and prompts of jobs whose client went away are dropped at once."""
        with self._wake:
            self._waiting = deque(job for job in self._waiting if not job.cancelled)
        self._prefilling = deque(p for p in self._prefilling if not p.job.cancelled)
        self._keep(lambda row: not row.job.cancelled)

    def _keep(self, wanted: Callable[[Row], bool]) -> None:
        """Keep the running rows `wanted(row)` says yes to, and their cache rows."""
        keep = [b for b, row in enumerate(self._rows) if wanted(row)]
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[b] for b in keep]
        if not keep:
            self._cache = self.model.new_cache()
            return
        self._cache.select(torch.tensor(keep, device=self.device))

    def _fail_all(self, message: str) -> None:
        """Tell every job in flight that it failed, and start again from an empty batch."""
        with self._wake:
            jobs = [*self._waiting] if self._closing else []
            if self._closing:
                self._waiting.clear()
        jobs += [p.job for p in self._prefilling]
        jobs += list({id(row.job): row.job for row in self._rows}.values())
        for job in jobs:
            job.emit(FailedEvent(message))
        self._prefilling.clear()
        self._rows = []
        self._cache = self.model.new_cache()
