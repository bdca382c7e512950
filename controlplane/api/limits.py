"""A request-body size limit enforced before the body is parsed (pure ASGI; chunked bodies too)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.api.schemas import error_body

__all__ = ["BodyLimit"]


class BodyLimit:
    """413 with the JSON error shape when a body is (or turns out to be) over ``max_bytes``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, unlimited_prefixes: tuple[str, ...] = ()) -> None:
        self.app, self.max_bytes = app, max_bytes
        #: paths that stream their body and enforce their own limit (uploads)
        self.unlimited_prefixes = unlimited_prefixes

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            error_body(
                code="body_too_large", message=f"request bodies are limited to {self.max_bytes} bytes", field="body"
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(self.unlimited_prefixes):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        # Read the whole body first (it is small by definition: at most max_bytes),
        # refuse it past the limit, then replay it to the app. Raising from inside
        # receive() would be swallowed by the framework's body parser as a 400.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)
