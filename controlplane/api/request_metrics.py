"""API latency for ``fusionplane_http_request_duration_seconds`` (pure ASGI, inside FastAPI's routing).

The ``route`` label is the route's template (``/v1/tasks/{task_id}``), read
from the scope once FastAPI has matched it, never the raw path: task ids in
a label would give every task its own series. A request no route matched
(a 404 for an unknown path, a scanner's probes) is ``unmatched``.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.metrics import Metrics

__all__ = ["UNMATCHED", "RequestMetrics"]

#: the ``route`` label of a request that no route matched
UNMATCHED = "unmatched"


class RequestMetrics:
    """Observes every HTTP request's duration with its method, route template and status code."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises before it starts a response
        observed = False

        def observe() -> None:
            nonlocal observed
            if not observed:
                observed = True
                self.metrics.http_request_seconds.labels(
                    method=_method(scope), route=_route(scope), status=str(status)
                ).observe(time.perf_counter() - started)

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # before the last chunk leaves: a client that has the whole response finds it counted
                observe()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            observe()  # the app raised, or ended without a last body chunk


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def _method(scope: Scope) -> str:
    # a client may send any token as a method; only the ones the API serves become label values
    method = str(scope.get("method", ""))
    return method if method in _KNOWN_METHODS else "other"


_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
