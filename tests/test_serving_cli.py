"""`tformer serve` as a user starts it: a process of its own on a free loopback port, with
SmolLM2-135M-Instruct (GGUF), answering the openai client as `tformer generate` answers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from tformer.assets import smollm2_gguf
from tformer.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"
START_TIMEOUT_S = 120.0  # converting the GGUF file on a first start takes ~10 s on 2 cores
LISTENING = re.compile(r"serving '(?P<name>[^']+)' at (?P<url>http://\S+)/v1")


@contextmanager
def serve_process(
    *args: str, stop: signal.Signals = signal.SIGINT
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`tformer serve ARGS --port 0` until the block ends (then `stop`: Ctrl-C as a user
    stops it, SIGTERM as a service manager does); yields the base URL it prints and the
    process."""
    env = os.environ | {"PYTHONPATH": str(SRC)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tformer.cli", "serve", *args, "--port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert process.stderr is not None
        for line in process.stderr:  # the line it prints once it listens
            if match := LISTENING.search(line):
                break
            assert time.monotonic() < deadline, "tformer serve did not start"
        else:
            raise AssertionError(f"tformer serve exited with {process.wait()}")
        yield match["url"], process
    finally:
        process.send_signal(stop)
        process.wait(timeout=30)


def _gguf() -> Path:
    try:
        return smollm2_gguf()
    except FileNotFoundError as error:
        pytest.skip(str(error))


def generate_cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["generate", *args]) == 0
    return capsys.readouterr().out.removesuffix("\n")


def test_smollm2_gguf_served_answers_as_tformer_generate(capsys) -> None:
    gguf = _gguf()
    with serve_process(str(gguf), "--max-batch", "4") as (url, process):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        name = client.models.list().data[0].id
        assert name == "SmolLM2-135M-Instruct.Q4_1"
        question = "What is the capital of France?"
        chat = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": question}], max_tokens=24,
            temperature=0,
        )  # fmt: skip
        prompt = "The three primary colours are"
        stream = client.completions.create(
            model=name, prompt=prompt, max_tokens=24, temperature=0, stream=True
        )
        streamed = "".join(chunk.choices[0].text for chunk in stream)
        args = (str(gguf), "--max-new-tokens", "24")
        assert chat.choices[0].message.content == generate_cli(capsys, *args, "--chat", question)
        assert streamed == generate_cli(capsys, *args, "--prompt", prompt)
        assert "Paris" in chat.choices[0].message.content
    assert process.returncode == 0  # Ctrl-C ends it cleanly


def test_a_tiny_model_served_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    from serving import char_tokenizer, tiny_lm

    tokenizer = char_tokenizer(tmp_path)
    path = tiny_lm(tokenizer, steps=1).save_pretrained(tmp_path / "lm", tokenizer)
    with serve_process(str(path), "--model-name", "tiny", stop=signal.SIGTERM) as (url, process):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        answer = client.completions.create(model="tiny", prompt="the", max_tokens=3)
        assert answer.usage.completion_tokens == 3
    assert process.returncode == 0


def test_serve_mistakes_end_in_one_error_line(tmp_path: Path, capsys) -> None:
    assert main(["serve", str(tmp_path / "missing.gguf"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tformer: error: ")


def test_serve_help_names_the_endpoints(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for text in ("/v1/chat/completions", "/v1/embeddings", "--api-key", "--max-batch", "127.0.0.1"):
        assert text in out


@pytest.mark.slow
def test_load_200_requests_16_clients_smollm2_int4() -> None:
    """Nothing lost under load: every request answered (none refused: the queue holds the
    16 clients' requests), no 5xx, every answer its full length or ended by EOS."""
    from benchmarks.load import run_load

    gguf = _gguf()
    with serve_process(str(gguf), "--quantize", "int4", "--max-batch", "8") as (url, _):
        prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]
        bodies = [
            {
                "model": gguf.stem,
                "prompt": prompts[i % 3],
                "max_tokens": 16 + i % 17,
                "temperature": 0,
            }
            for i in range(200)
        ]
        load = run_load(f"{url}/v1/completions", bodies, clients=16, deadline_s=600)
        summary = load.summary()
        print("load:", summary)  # p50/p99 latency and time to first token, -s to see
        assert summary["requests"] == 200 and summary.get("status_200") == 200
        assert all(
            0 < o.tokens <= b["max_tokens"] for o, b in zip(load.outcomes, bodies, strict=True)
        )
