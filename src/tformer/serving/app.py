"""The OpenAI-compatible HTTP API of one model, on FastAPI.

    app = create_app(model, tokenizer, ServerSettings(model_name="smollm2"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

A decoder-only LM answers `/v1/chat/completions` and `/v1/completions` through a
continuous-batching `Scheduler`; an encoder answers `/v1/embeddings` (the vectors of
`tformer embed`). `/v1/models` and `/health` answer for either. The model is fixed when the
app is made: a request names it only to be checked against it, never a path.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from tformer.errors import TformerError
from tformer.generation import make_config
from tformer.generation.config import GenerationConfig
from tformer.models import DecoderOnlyLM, EncoderModel, TformerModel
from tformer.pipelines import embed
from tformer.serving.completions import CHAT, TEXT, Completion, Shape, Submission
from tformer.serving.errors import ApiError
from tformer.serving.guards import LimitBodySize, RequireApiKey
from tformer.serving.scheduler import Scheduler
from tformer.serving.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    _Sampling,
)
from tformer.tokenizer import Tokenizer

OPENAI_DEFAULT_TEMPERATURE = 1.0  # what a request without temperature gets, as at OpenAI


@dataclass(frozen=True)
class ServerSettings:
    """What `tformer serve` is told at start-up; the limits protect the one model."""

    model_name: str
    api_key: str | None = None
    max_batch: int = 16  # rows decoded together
    max_queue: int = 64  # requests waiting for a row; more get 429
    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int | None = None  # None: the model's context
    max_completion_tokens: int = 4096  # the most one choice may generate
    prefill_chunk: int = 256  # prompt tokens run between two decode steps
    threads: int | None = None  # torch intra-op threads of the model's thread


def create_app(model: TformerModel, tokenizer: Tokenizer, settings: ServerSettings) -> FastAPI:
    """The app; its lifespan starts and stops the scheduler (or the embedding lock)."""
    if not isinstance(model, (DecoderOnlyLM, EncoderModel)):
        raise TformerError(
            f"tformer serve runs decoder-only LMs (chat, completions) and encoders "
            f"(embeddings), not a {type(model).__name__}"
        )
    api = _Api(model.eval(), tokenizer, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if api.scheduler is not None:
            api.scheduler.start()
        try:
            yield
        finally:
            if api.scheduler is not None:
                api.scheduler.close()

    app = FastAPI(title="tformer", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(api.router())
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_body)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(TformerError, _user_error)  # type: ignore[arg-type]
    app.add_middleware(LimitBodySize, max_bytes=settings.max_body_bytes)  # type: ignore[arg-type]
    if settings.api_key:  # added last: runs first, before the body is even read
        app.add_middleware(RequireApiKey, api_key=settings.api_key)  # type: ignore[arg-type]
    return app


class _Api:
    """The routes over one model."""

    def __init__(self, model: TformerModel, tokenizer: Tokenizer, settings: ServerSettings):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.created = int(time.time())
        self.scheduler: Scheduler | None = None
        if isinstance(model, DecoderOnlyLM):
            self.scheduler = Scheduler(
                model, tokenizer, max_batch=settings.max_batch, max_queue=settings.max_queue,
                prefill_chunk=settings.prefill_chunk, threads=settings.threads,
            )  # fmt: skip
        self.context = model.config.max_seq_len
        self.max_prompt_tokens = min(settings.max_prompt_tokens or self.context, self.context)
        self._embedding = threading.Lock()  # one embedding batch at a time on the model
        self._embedding_waiting = 0

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route("/health", self.health, methods=["GET"])
        router.add_api_route("/v1/models", self.models, methods=["GET"])
        router.add_api_route("/v1/chat/completions", self.chat, methods=["POST"])
        router.add_api_route("/v1/completions", self.completions, methods=["POST"])
        router.add_api_route("/v1/embeddings", self.embeddings, methods=["POST"])
        return router

    # ---- routes ------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        load = self.scheduler.load() if self.scheduler is not None else {}
        return {"status": "ok", "model": self.settings.model_name, **load}

    async def models(self) -> dict[str, Any]:
        card = {
            "id": self.settings.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "tformer",
        }
        return {"object": "list", "data": [card]}

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Any:
        self._check_lm(body.model)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        text = self.tokenizer.apply_chat_template(messages)
        prompt = self.tokenizer.encode(text, add_special_tokens=False)
        return await self._complete(body, [prompt], CHAT, request)

    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        self._check_lm(body.model)
        prompts = self.tokenizer.encode_batch(body.prompts())
        return await self._complete(body, prompts, TEXT, request)

    async def embeddings(self, body: EmbeddingRequest) -> dict[str, Any]:
        self._check_model(body.model)
        if not isinstance(self.model, EncoderModel):
            raise ApiError(
                400, f"{self.settings.model_name} is a decoder-only LM; serve an encoder model "
                "(e.g. all-MiniLM-L6-v2) for embeddings", param="model",
            )  # fmt: skip
        texts = body.texts()
        counts = [len(ids) for ids in self.tokenizer.encode_batch(texts)]
        for i, count in enumerate(counts):
            self._check_prompt_length(count, f"input {i}")
        if self._embedding_waiting >= self.settings.max_queue:
            raise ApiError(429, "the server is busy; retry later", headers={"Retry-After": "1"})
        self._embedding_waiting += 1
        try:
            vectors = await asyncio.to_thread(self._embed, texts)
        finally:
            self._embedding_waiting -= 1
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
        return {"object": "list", "data": data, "model": self.settings.model_name, "usage": usage}

    # ---- helpers -----------------------------------------------------------------------------

    def _check_model(self, name: str) -> None:
        if name != self.settings.model_name:
            raise ApiError(
                404, f"the model {name!r} is not served here; this server serves "
                f"{self.settings.model_name!r} (GET /v1/models)",
                param="model", code="model_not_found",
            )  # fmt: skip

    def _check_lm(self, name: str) -> None:
        self._check_model(name)
        if self.scheduler is None:
            raise ApiError(
                400, f"{name} is an encoder: it answers /v1/embeddings, not completions; "
                "serve a decoder-only LM for those", param="model",
            )  # fmt: skip

    def _check_prompt_length(self, count: int, what: str) -> None:
        if count > self.max_prompt_tokens:
            raise ApiError(
                400, f"{what} is {count} tokens long; this server takes at most "
                f"{self.max_prompt_tokens} (the model's context is {self.context})",
                code="context_length_exceeded",
            )  # fmt: skip

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        with self._embedding:
            torch.set_num_threads(self.settings.threads or torch.get_num_threads())
            return embed(self.model, self.tokenizer, texts, truncate=False)

    def _config(self, body: _Sampling, prompts: list[list[int]]) -> GenerationConfig:
        """The request's decoding options, checked against the context and the limits."""
        longest = max(map(len, prompts))
        for i, prompt in enumerate(prompts):
            self._check_prompt_length(
                len(prompt), "the prompt" if len(prompts) == 1 else f"prompt {i}"
            )
            if not prompt:
                raise ApiError(400, "the prompt is empty", param="prompt")
        room = self.context - longest
        limit = self.settings.max_completion_tokens
        asked = body.token_limit()
        if room < 1:
            raise ApiError(
                400, f"the prompt of {longest} tokens fills the model's context of "
                f"{self.context} tokens, leaving no room for an answer",
                code="context_length_exceeded",
            )  # fmt: skip
        if asked is not None and asked > limit:
            raise ApiError(
                400, f"max_tokens={asked} is over this server's limit of {limit}",
                param="max_tokens",
            )  # fmt: skip
        if asked is not None and asked > room:
            raise ApiError(
                400, f"the prompt of {longest} tokens + max_tokens={asked} is more than the "
                f"model's context of {self.context} tokens; ask for at most {room}",
                param="max_tokens", code="context_length_exceeded",
            )  # fmt: skip
        if body.n > self.settings.max_batch:
            raise ApiError(400, f"n={body.n} is over this server's limit of "
                           f"{self.settings.max_batch}", param="n")  # fmt: skip
        sampling: dict[str, Any] = {"do_sample": False}
        temperature = body.temperature
        if temperature is None:
            temperature = OPENAI_DEFAULT_TEMPERATURE
        if temperature > 0:  # 0 means greedy, as OpenAI documents it
            sampling = {"temperature": temperature, "top_p": body.top_p}
        return make_config(
            self.model, max_new_tokens=asked or min(room, limit), seed=body.seed,
            stop_strings=body.stop_strings(), **sampling,
        )  # fmt: skip

    async def _complete(
        self, body: _Sampling, prompts: list[list[int]], shape: Shape, request: Request
    ) -> Any:
        assert self.scheduler is not None
        config = self._config(body, prompts)
        submission = Submission(self.scheduler, prompts, config, body.n)
        completion = Completion(
            submission, shape, self.tokenizer, self.settings.model_name, config.stop_strings
        )
        if not body.stream:
            return await completion.respond(request)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(
            completion.stream(include_usage), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )  # fmt: skip


def _encode(vector: torch.Tensor, encoding_format: str) -> list[float] | str:
    """float: a JSON list; base64: the little-endian float32 bytes (the openai client's
    default, which it decodes with numpy)."""
    if encoding_format == "base64":
        return base64.b64encode(vector.numpy().astype("<f4").tobytes()).decode()
    return vector.tolist()


async def _api_error(_: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _user_error(_: Request, error: TformerError) -> JSONResponse:
    return await _api_error(_, ApiError(400, str(error)))


async def _http_error(_: Request, error: HTTPException) -> JSONResponse:
    """FastAPI's own refusals (unknown path, wrong method) in OpenAI's shape."""
    return await _api_error(_, ApiError(error.status_code, str(error.detail)))


async def _invalid_body(_: Request, error: RequestValidationError) -> JSONResponse:
    """pydantic's complaint as one sentence naming the field, with status 400."""
    return await _api_error(_, _validation_error(error.errors()))


TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}


def _field_path(location: Sequence[str | int]) -> str | None:
    """("body", "messages", 0, "role") -> "messages.0.role"; a union's member tags
    ("str", "list[TextPart]", ...) are not fields and are left out."""
    parts = [
        str(part)
        for part in location
        if part != "body"
        and not (
            isinstance(part, str)
            and (part in TYPE_NAMES or part[:1].isupper() or any(c in part for c in "[]-"))
        )
    ]
    return ".".join(parts) or None


def _validation_error(errors: Sequence[Any]) -> ApiError:
    """One ApiError for pydantic's errors. A value that fits no member of a union gets one
    error per member; the most telling is one that is not a plain type mismatch (the value
    had the member's type but broke its rule)."""
    first = errors[0]
    if first["type"] == "json_invalid":
        return ApiError(400, "the request body is not valid JSON")
    param = _field_path(first["loc"])
    same_field = [e for e in errors if _field_path(e["loc"]) == param]
    telling = [e for e in same_field if not e["type"].endswith("_type")] or same_field
    chosen = telling[0]
    param = _field_path(chosen["loc"])
    if chosen["type"] == "extra_forbidden":
        message = f"unknown or unsupported field {param!r}"
    elif chosen["type"] == "missing":
        message = f"the field {param!r} is required"
    else:
        message = f"{param}: {chosen['msg']}" if param else str(chosen["msg"])
    return ApiError(400, message, param=param)
