"""`python -m benchmarks.serving [--quick]`: serving SmolLM2-135M (GGUF) to 1, 4 and 16
concurrent clients -- `tformer serve --quantize int4` against llama.cpp's OpenAI-compatible
server (llama-cpp-python[server], the same Q4_1 file) and sequential `transformers`
`generate()` (float32, one request at a time, as a script serving requests would).

Every contender gets the same closed-loop load (`benchmarks.load`): greedy completions of
the decoding benchmark's prompts, streamed, `max_tokens` each. Rounds are interleaved (each
level runs every contender once per round, in rotating order) and the medians reported:
aggregate tokens/s, time to first token, p99 latency. Writes
benchmarks/results/<device>-<date>-serving{.jsonl,.md}; nothing else may run meanwhile.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from benchmarks.decoding import PROMPTS, smollm2
from benchmarks.load import Outcome, run_load, streamed_request
from benchmarks.machine import machine_facts
from benchmarks.report import write_records

RESULTS = Path(__file__).resolve().parent / "results"
SRC = Path(__file__).resolve().parents[1] / "src"
CLIENTS = (1, 4, 16)
REQUESTS = {False: {1: 8, 4: 16, 16: 48}, True: {1: 2, 4: 4, 16: 16}}  # by quick, clients
MAX_TOKENS = {False: 64, True: 16}
ROUNDS = {False: 3, True: 1}
START_TIMEOUT_S = 180.0
OURS, LLAMA_CPP, TRANSFORMERS = "tformer serve int4", "llama.cpp server", "transformers sequential"

Send = Callable[[str, dict[str, Any]], Outcome]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_process(command: list[str], url: str, name: str) -> Iterator[str]:
    """Run a server command until the block ends; waits until `url`/models answers."""
    env = os.environ | {"PYTHONPATH": str(SRC)}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(f"{url}/v1/models"):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {process.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start in {START_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        yield f"{url}/v1/completions"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def tformer_server(gguf: Path, threads: int, max_batch: int) -> Any:
    port = free_port()
    command = [sys.executable, "-m", "tformer.cli", "serve", str(gguf), "--port", str(port)]
    command += ["--quantize", "int4", "--threads", str(threads), "--max-batch", str(max_batch)]
    return server_process(command, f"http://127.0.0.1:{port}", OURS)


def llama_cpp_server(gguf: Path, threads: int) -> Any:
    """llama-cpp-python's server; it answers one request at a time, so requests must wait
    for each other rather than interrupt each other (its default)."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port)]
    command += ["--host", "127.0.0.1", "--n_threads", str(threads), "--n_ctx", "2048"]
    command += ["--interrupt_requests", "False", "--verbose", "False"]
    return server_process(command, f"http://127.0.0.1:{port}", LLAMA_CPP)


def transformers_sequential(float32: Path, threads: int) -> Send:
    """A stand-in server: `generate()` of the transformers model, one request at a time
    (a lock), timed from the moment the request is made, waiting included."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(float32)
    turn = threading.Lock()

    class FirstToken(BaseStreamer):
        """Notes when generate() hands over its first new token (its second `put`)."""

        def __init__(self) -> None:
            self.puts, self.at = 0, None

        def put(self, value: torch.Tensor) -> None:
            self.puts += 1
            if self.puts == 2:
                self.at = time.perf_counter()

        def end(self) -> None:
            pass

    def send(_: str, body: dict[str, Any]) -> Outcome:
        start = time.perf_counter()
        ids = tokenizer(body["prompt"], return_tensors="pt").input_ids
        streamer = FirstToken()
        with turn, torch.inference_mode():
            out = model.generate(
                ids, max_new_tokens=body["max_tokens"], do_sample=False, streamer=streamer,
                pad_token_id=tokenizer.eos_token_id,
            )  # fmt: skip
        new = out[0, ids.shape[1] :]
        first = None if streamer.at is None else streamer.at - start
        return Outcome(200, time.perf_counter() - start, first, int(new.numel()))

    return send


def bodies(model: str, requests: int, max_tokens: int) -> list[dict[str, Any]]:
    return [
        {"model": model, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens,
         "temperature": 0}
        for i in range(requests)
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few requests, one round (smoke)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, help="results stem (default: benchmarks/results/...)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights, _ = smollm2()
    facts = machine_facts(torch.device("cpu"), args.quick) | {"threads": args.threads}
    max_tokens, rounds = MAX_TOKENS[args.quick], ROUNDS[args.quick]
    name = weights.gguf.name.removesuffix(".gguf")
    records: list[dict[str, Any]] = []
    with (
        tformer_server(weights.gguf, args.threads, max(CLIENTS)) as ours,
        llama_cpp_server(weights.gguf, args.threads) as theirs,
    ):
        contenders: dict[str, tuple[str, Send]] = {
            OURS: (ours, streamed_request),
            LLAMA_CPP: (theirs, streamed_request),
            TRANSFORMERS: ("", transformers_sequential(weights.float32, args.threads)),
        }
        for url, send in contenders.values():  # warm-up: first-call costs are not served load
            send(url, bodies(name, 1, 8)[0])
        for clients in CLIENTS:
            work = bodies(name, REQUESTS[args.quick][clients], max_tokens)
            order = list(contenders)
            for round_index in range(rounds):
                for contender in order[round_index % 3 :] + order[: round_index % 3]:
                    url, send = contenders[contender]
                    load = run_load(url, work, clients, send=send)
                    summary = load.summary()
                    records.append(
                        {"contender": contender, "clients": clients, "round": round_index,
                         "max_tokens": max_tokens, **summary}
                    )  # fmt: skip
                    print(f"{clients:3d} clients  {contender:24s} " + _line(summary), flush=True)
    stem = args.out or RESULTS / f"{_slug(facts)}-{datetime.date.today().isoformat()}-serving"
    if args.quick and args.out is None:
        stem = stem.with_name(stem.name + "-quick")
    write(records, facts, stem)
    print(f"wrote {stem}.jsonl and .md")


def _line(summary: dict[str, Any]) -> str:
    return (
        f"{summary['tokens_per_s']:7.1f} tok/s  ttft p50 {summary['ttft_p50_s']:.2f} s  "
        f"p99 latency {summary['latency_p99_s']:.2f} s  statuses "
        + ",".join(f"{k[7:]}:{v}" for k, v in summary.items() if k.startswith("status_"))
    )


def _slug(facts: dict[str, Any]) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(facts["device"])).strip("-").lower()


def medians(records: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, float]]:
    """(clients, contender) -> the median over rounds of each figure."""
    keys = ("tokens_per_s", "ttft_p50_s", "latency_p50_s", "latency_p99_s")
    grouped: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault((record["clients"], record["contender"]), []).append(record)
    return {
        group: {key: statistics.median(r[key] for r in rows) for key in keys}
        for group, rows in grouped.items()
    }


def markdown(records: list[dict[str, Any]], facts: dict[str, Any]) -> str:
    table = medians(records)
    lines = [
        "# Serving SmolLM2-135M-Instruct (Q4_1 GGUF)",
        "",
        f"Machine: {facts['cpu_model']} ({facts['cpu_capability']}, native bf16: "
        f"{facts['native_bf16']}), {facts['threads']} threads, torch {facts['torch']}. "
        f"Greedy completions of {records[0]['max_tokens']} tokens at most, streamed; medians "
        f"of {max(r['round'] for r in records) + 1} interleaved rounds.",
        "",
        "| clients | contender | tokens/s | TTFT p50 (s) | latency p50 (s) | latency p99 (s) "
        "| tokens/s vs llama.cpp | vs transformers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (clients, contender), m in sorted(table.items()):
        base = table.get((clients, LLAMA_CPP), {}).get("tokens_per_s")
        ref = table.get((clients, TRANSFORMERS), {}).get("tokens_per_s")
        lines.append(
            f"| {clients} | {contender} | {m['tokens_per_s']:.1f} | {m['ttft_p50_s']:.2f} | "
            f"{m['latency_p50_s']:.2f} | {m['latency_p99_s']:.2f} | "
            f"{m['tokens_per_s'] / base:.2f}x | {m['tokens_per_s'] / ref:.2f}x |"
            if base and ref
            else f"| {clients} | {contender} | {m['tokens_per_s']:.1f} | ... |"
        )
    return "\n".join(lines) + "\n"


def write(records: list[dict[str, Any]], facts: dict[str, Any], stem: Path) -> None:
    write_records(records, facts, stem.with_suffix(".jsonl"))
    stem.with_suffix(".md").write_text(markdown(records, facts))


if __name__ == "__main__":
    main()
