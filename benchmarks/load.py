"""A closed-loop load generator for OpenAI-compatible servers: `clients` threads, each sending
its next streamed request as soon as its last one is answered, `requests` in all.

Each request is timed from sending to its first piece of text (time to first token) and to
its last byte (latency); tokens are the server's `usage` count where it reports one, else
the number of chunks with text (one per token for the servers measured). Plain `http.client`
keeps the client's own cost small and the same for every server. Used by the serving
benchmark and by the load test, which asserts that nothing is lost.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Outcome:
    """One request: its HTTP status (0: no answer at all), times in seconds, tokens."""

    status: int
    latency_s: float
    first_token_s: float | None = None
    tokens: int = 0
    error: str | None = None


def streamed_request(
    url: str, body: dict[str, Any], timeout_s: float = 300.0, api_key: str | None = None
) -> Outcome:
    """POST `body` (stream on) to `url` (.../v1/completions) and read the events."""
    parts = urlsplit(url)
    start = time.perf_counter()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    payload = body | {"stream": True, "stream_options": {"include_usage": True}}
    try:
        connection.request("POST", parts.path, json.dumps(payload), headers)
        response = connection.getresponse()
        if response.status != 200:
            response.read()
            return Outcome(response.status, time.perf_counter() - start)
        first, chunks, usage = None, 0, None
        while line := response.readline():
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                return Outcome(500, time.perf_counter() - start, first, chunks, str(event))
            usage = event.get("usage") or usage
            if any(_text(choice) for choice in event.get("choices", ())):
                chunks += 1
                first = first if first is not None else time.perf_counter() - start
        tokens = usage["completion_tokens"] if usage else chunks
        return Outcome(200, time.perf_counter() - start, first, tokens)
    except (OSError, http.client.HTTPException) as error:
        return Outcome(0, time.perf_counter() - start, error=repr(error))
    finally:
        connection.close()


def _text(choice: dict[str, Any]) -> str:
    return choice.get("text") or (choice.get("delta") or {}).get("content") or ""


@dataclass(frozen=True)
class Load:
    outcomes: list[Outcome]
    wall_s: float

    def summary(self) -> dict[str, float | int]:
        """Counts by status, aggregate tokens/s, and latency/TTFT percentiles (seconds)."""
        answered = [o for o in self.outcomes if o.status == 200]
        latencies = sorted(o.latency_s for o in answered)
        firsts = sorted(o.first_token_s for o in answered if o.first_token_s is not None)
        tokens = sum(o.tokens for o in answered)
        statuses: dict[str, int] = {}
        for outcome in self.outcomes:
            statuses[str(outcome.status)] = statuses.get(str(outcome.status), 0) + 1
        return {
            "requests": len(self.outcomes),
            **{f"status_{code}": count for code, count in sorted(statuses.items())},
            "tokens": tokens,
            "tokens_per_s": tokens / self.wall_s,
            "wall_s": self.wall_s,
            "latency_p50_s": percentile(latencies, 50),
            "latency_p99_s": percentile(latencies, 99),
            "ttft_p50_s": percentile(firsts, 50),
            "ttft_p99_s": percentile(firsts, 99),
        }


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile by linear interpolation (NaN for no values)."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[int(q) - 1]


def run_load(
    url: str,
    bodies: list[dict[str, Any]],
    clients: int,
    *,
    send: Any = streamed_request,
    deadline_s: float = 1800.0,
) -> Load:
    """Send every body of `bodies` (in order, by the next free client) with `clients`
    concurrent clients; stops handing out bodies after `deadline_s` (those not sent count
    as lost: status 0). Outcomes come in the order of `bodies`."""
    lock, position = threading.Lock(), 0
    outcomes = [Outcome(0, 0.0, error="not sent before the deadline")] * len(bodies)
    start = time.perf_counter()

    def client() -> None:
        nonlocal position
        while True:
            with lock:
                if position >= len(bodies) or time.perf_counter() - start > deadline_s:
                    return
                index, position = position, position + 1
            outcomes[index] = send(url, bodies[index])

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: client(), range(clients)))
    return Load(outcomes, time.perf_counter() - start)
