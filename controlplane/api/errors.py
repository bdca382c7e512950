"""One JSON error shape for every 4xx/5xx: ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations

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
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "invalid", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
        # FastAPI raises its only 400 when it cannot decode the request body (e.g. not UTF-8)
        field = "body" if exc.status_code == 400 else None
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body(code=code.get(exc.status_code, "http_error"), message=str(exc.detail), field=field),
            headers=getattr(exc, "headers", None),
        )
