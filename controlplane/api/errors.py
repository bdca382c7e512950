"""One JSON error shape for every 4xx/5xx: ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from controlplane.api.schemas import FieldError, error_body
from controlplane.domain import InvalidTransition

__all__ = ["ApiError", "install_error_handlers"]


class ApiError(Exception):
    """An error with an HTTP status, a stable code and the field it is about (and response headers, if any)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.extra = status, code, message, field, extra
        self.headers = dict(headers or {})


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = _field(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            field = "body"
        return JSONResponse(
            status_code=422,
            content=error_body(code="invalid", message=str(first.get("msg")), field=field),
        )

    @app.exception_handler(FieldError)
    async def _field_error(_request: Request, exc: FieldError) -> JSONResponse:
        return JSONResponse(status_code=422, content=error_body(code="invalid", message=str(exc), field=exc.field))

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status,
            content=error_body(code=exc.code, message=exc.message, field=exc.field, **exc.extra),
            headers=exc.headers or None,
        )

    @app.exception_handler(InvalidTransition)
    async def _transition(_request: Request, exc: InvalidTransition) -> JSONResponse:
        return JSONResponse(status_code=409, content=error_body(code="invalid_state", message=str(exc), field="state"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
        # FastAPI raises its only 400 when it cannot decode the request body (e.g. not UTF-8)
        field = "body" if exc.status_code == 400 else None
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request, headers.get("Allow"))
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body(code=code.get(exc.status_code, "http_error"), message=str(exc.detail), field=field),
            headers=headers or None,
        )


def _allowed_methods(request: Request, given: str | None) -> str:
    """Every method the API serves at this path: Starlette's ``Allow`` names the first matching route's only
    (``GET /v1/tasks`` and ``POST /v1/tasks`` are two routes), so the OpenAPI document's paths add theirs."""
    methods = {method.strip() for method in (given or "").split(",") if method.strip()}
    for template, operations in request.app.openapi()["paths"].items():
        if _template(template).fullmatch(request.scope["path"]):
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(methods))


@functools.cache
def _template(path: str) -> re.Pattern[str]:
    """``/v1/tasks/{task_id}`` as a pattern: each parameter one path segment."""
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)))
