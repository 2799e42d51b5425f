"""What every request passes before any route sees it: the API key and the body size.

Both are plain ASGI middleware, so they answer before FastAPI parses anything: a client
without the key learns nothing about what a valid body looks like, and an oversized body is
refused after at most `max_body_bytes` + one chunk have been read, never held whole.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tformer.serving.errors import ApiError, send_error

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = ("/health",)  # answered without the key: liveness probes carry no secrets


class RequireApiKey:
    """401 for requests without `Authorization: Bearer <key>` (paths other than /health)."""

    def __init__(self, app: App, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, self.expected):  # constant time: no timing oracle
            error = ApiError(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer <key>' "
                "with the key the server was started with",
                code="invalid_api_key",
            )
            return await send_error(send, error)
        return await self.app(scope, receive, send)


class LimitBodySize:
    """413 for request bodies over `max_bytes`, declared (Content-Length) or streamed."""

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_error(send, self._too_large())
        body, more = b"", True
        while more:  # read the body here, so that an overlong one is never passed on
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await send_error(send, self._too_large())
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls see the disconnect, as without this guard

        return await self.app(scope, replay, send)

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"the request body is over the server's limit of {self.max_bytes} bytes "
            "(tformer serve --max-body-bytes)",
            code="request_too_large",
        )
