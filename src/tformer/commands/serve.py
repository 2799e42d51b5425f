"""`tformer serve MODEL`: the OpenAI-compatible HTTP API over one model (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import socket
import sys
from pathlib import Path

from tformer.commands import MODEL_HELP
from tformer.errors import InputError

API_KEY_VARIABLE = "TFORMER_API_KEY"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def model_name(path: str) -> str:
    """The id clients name the model by: the file or directory name, without `.gguf`."""
    name = Path(path.rstrip("/")).name
    return name.removesuffix(".gguf") or "model"


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); a clear error if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(2048)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from tformer.serving import ServerSettings, create_app
    except ImportError as error:
        raise InputError(
            f"tformer serve needs the serve extra ({error.name} is missing): "
            "pip install 'tformer[serve]'"
        ) from None
    from tformer.commands.generate import load_for_generation

    api_key = args.api_key or os.environ.get(API_KEY_VARIABLE) or None
    if not _is_loopback(args.host) and api_key is None:
        print(
            f"tformer: warning: serving on {args.host} without an API key: anyone who can "
            f"reach it can use the model (give --api-key or set {API_KEY_VARIABLE})",
            file=sys.stderr,
        )
    model, tokenizer = load_for_generation(
        args.model, args.device, quantize=args.quantize, many_rows=True
    )  # a batch of rows decodes at every step
    settings = ServerSettings(
        model_name=args.model_name or model_name(args.model),
        api_key=api_key,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        max_prompt_tokens=args.max_prompt_tokens,
        max_completion_tokens=args.max_completion_tokens,
        prefill_chunk=args.prefill_chunk,
        threads=args.threads,
    )
    app = create_app(model, tokenizer, settings)
    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"tformer: serving {settings.model_name!r} at http://{shown}:{port}/v1 (Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5)
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the
    # handler that was there before: make both an ordinary end, as a user or a service
    # manager stopping the server is not an error.
    signal.signal(signal.SIGTERM, _stopped)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    print("tformer: server stopped", file=sys.stderr)


def _stopped(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over the OpenAI HTTP API (chat, completions, embeddings)",
        description="Serve one model over HTTP with OpenAI's API, so the openai client, SDKs "
        "and UIs work against it: a decoder-only LM answers POST /v1/chat/completions (with "
        "its chat template) and /v1/completions, streamed or whole, with continuous batching "
        "(requests join and leave the running batch at every step); an encoder answers POST "
        "/v1/embeddings (the vectors of `tformer embed`). GET /v1/models and /health answer "
        "too. Binds to 127.0.0.1 unless --host says otherwise; with an API key every /v1 "
        "request needs 'Authorization: Bearer KEY'. Needs the serve extra: pip install "
        "'tformer[serve]'. See docs/serving.md.",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    p.add_argument(
        "--port", type=int, default=8000, help="port (default %(default)s; 0: any free port)"
    )
    p.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"require this bearer key on /v1 requests (or set {API_KEY_VARIABLE}, which "
        "keeps the key out of the process list)",
    )
    p.add_argument(
        "--model-name", metavar="NAME", help="the model id clients use (default: MODEL's name)"
    )
    p.add_argument(
        "--max-batch",
        type=_positive,
        default=16,
        metavar="N",
        help="rows decoded together; requests beyond it wait (default %(default)s)",
    )
    p.add_argument(
        "--max-queue",
        type=_positive,
        default=64,
        metavar="N",
        help="requests waiting for a row; more are refused with 429 (default %(default)s)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=_positive,
        default=1 << 20,
        metavar="N",
        help="largest request body; larger ones get 413 (default %(default)s)",
    )
    p.add_argument(
        "--max-prompt-tokens",
        type=_positive,
        metavar="N",
        help="longest prompt accepted (default: the model's context)",
    )
    p.add_argument(
        "--max-completion-tokens",
        type=_positive,
        default=4096,
        metavar="N",
        help="most tokens one choice may generate (and the default max_tokens, cut to the "
        "context left); default %(default)s",
    )
    p.add_argument(
        "--prefill-chunk",
        type=_positive,
        default=256,
        metavar="N",
        help="prompt tokens run between two decode steps, so long prompts do not stall the "
        "running requests (default %(default)s)",
    )
    p.add_argument(
        "--quantize",
        choices=("int8", "int4"),
        help="weight-only quantised linear layers (see tformer generate --help); where bf16 "
        "is native, a bf16 copy of the quantised weights serves steps of 8 or more rows "
        "(docs/serving.md)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=_positive, help="torch threads (default: torch's)")
    p.add_argument(
        "--log-level",
        default="warning",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level (default %(default)s; info logs every request)",
    )
    p.set_defaults(handler=run)
