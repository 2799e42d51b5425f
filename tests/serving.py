"""A real `tformer serve` app for tests: uvicorn on a free loopback port, in a thread of the
test process, started and stopped by the test (`serving(app)`), and tiny models to serve."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import uvicorn

from test_generation import tiny
from tformer import Tokenizer
from tformer.commands.serve import listen

TEXT = "the quick brown fox jumps over the lazy dog\nhello world\nuser: assistant: system:\n"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
START_TIMEOUT_S = 20.0
WINDOW = 48  # tokens per training example of `tiny_lm`


def char_tokenizer(directory: Path) -> Tokenizer:
    corpus = directory / "text.txt"
    corpus.write_text(TEXT)
    tokenizer = Tokenizer.train_char([corpus])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_lm(tokenizer: Tokenizer, max_seq_len: int = 64, steps: int = 100):
    """A tiny decoder with the tokenizer's ids, trained for a moment on TEXT so that its
    answers are varied text rather than one repeated character, and with no EOS id, so
    answers run to max_tokens or a stop string. Rotary positions: the same weights serve
    any context, so one training (cached) gives models of every `max_seq_len`."""
    ids = tokenizer.config_ids() | {"eos_id": None}
    model = tiny("decoder", max_seq_len=max_seq_len, positional="rotary", **ids)
    model.load_state_dict(
        _trained(
            tuple(tokenizer.encode(TEXT * 3, add_special_tokens=False)), steps, tuple(ids.items())
        )
    )
    return model.eval()


@functools.cache
def _trained(text: tuple[int, ...], steps: int, ids: tuple[tuple[str, object], ...]) -> dict:
    model = tiny("decoder", max_seq_len=WINDOW, positional="rotary", **dict(ids))
    tokens = torch.tensor([text])
    windows = tokens[:, : (tokens.shape[1] // WINDOW) * WINDOW].view(-1, WINDOW)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        loss = model(windows[:, :-1], labels=windows[:, 1:]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.state_dict()


@contextmanager
def serving(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Run `app` on 127.0.0.1 (a free port) until the block ends; yields the base URL."""
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
        sock.close()
