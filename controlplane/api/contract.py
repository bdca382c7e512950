"""What the OpenAPI document promises about errors: the one error body and every status a route answers.

Each route names the statuses it can answer besides its success
(``responses=errors(...)``), so a client generated from ``/openapi.json``
knows them all, and the fuzz test (``tests/integration/test_api_fuzz.py``)
fails on any status or shape the document does not list. A 422 is always
our error body, never FastAPI's ``HTTPValidationError``: the app's handler
(``api/errors.py``) turns every validation error into it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BAD_BODY",
    "CALLER",
    "ErrorBody",
    "ErrorDetail",
    "Responses",
    "errors",
    "header",
    "json_body",
    "with_one_error_shape",
]

#: the ``responses=`` of a FastAPI route: status -> OpenAPI response object
Responses = dict[int | str, dict[str, Any]]


class ErrorDetail(BaseModel):
    """``error``: a stable code, a message for people, and the field, header or parameter it is about."""

    # a few errors carry more (a conflicting task's ``task_id``, an ended attempt's ``state``)
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="Stable, for programs: invalid, not_found, forbidden, body_too_large, ...")
    message: str = Field(description="What went wrong, for people")
    field: str | None = Field(description="The body field (JSON path), header or parameter at fault, if any")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the API."""

    error: ErrorDetail


#: what each status means when a route does not say more
_MEANING: Mapping[int, str] = {
    400: "The request cannot be read: a body that is not UTF-8 or JSON, or a malformed header (`field` names it)",
    401: "No valid bearer token",
    403: "The token's role or tenant may not do this",
    404: "No such resource for this caller",
    409: "The resource's state does not allow this now",
    410: "The resource is gone",
    412: "`Tus-Resumable` is missing or not 1.0.0",
    413: "The body (or the length it declares) passes a size limit or quota",
    415: "The body's Content-Type is not the one this route reads",
    422: "A value breaks a rule; `field` names it",
    423: "Another request is writing to this upload",
    460: "The data's sha256 differs from the one the client sent (tus checksum extension)",
    502: "An object store the answer depends on failed",
    503: "A dependency of the answer is unavailable",
}

#: the statuses of an authenticated route: 401 without a valid token, 403 for a role that may not
CALLER = (401, 403)
#: the statuses of a route that reads a JSON body: undecodable (400), past the body limit (413), invalid (422)
BAD_BODY = (400, 413, 422)


def errors(*statuses: int, why: Mapping[int, str] | None = None) -> Responses:
    """The ``responses=`` entries for ``statuses``, each with the error body; ``why`` says more than the default."""
    said = dict(why or {})
    unknown = sorted(set(said) - set(statuses))
    if unknown:
        raise ValueError(f"why names statuses the route does not answer: {unknown}")
    return {
        status: {"model": ErrorBody, "description": said.get(status, _MEANING[status])}
        for status in sorted(set(statuses))
    }


def header(name: str, schema: Mapping[str, Any], description: str, *, required: bool = True) -> dict[str, Any]:
    """An OpenAPI header parameter, for routes that read their headers themselves (tus)."""
    return {"name": name, "in": "header", "required": required, "description": description, "schema": dict(schema)}


def _inlined(node: Any, defs: Mapping[str, Any]) -> Any:
    """``node`` with every ``#/$defs/...`` reference replaced by its definition (our models are not recursive)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inlined(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inlined(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inlined(item, defs) for item in node]
    return node


def json_body(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    """The ``openapi_extra`` of a route that reads and checks its JSON body itself (worker callbacks).

    The schema is inlined: a route's ``openapi_extra`` cannot add to the document's components.
    """
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": _inlined(schema, schema.get("$defs", {}))}},
        }
    }


def _error_shape_everywhere(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's default 422 (``HTTPValidationError``) replaced by the error body the handler really sends."""
    ours = {"$ref": "#/components/schemas/ErrorBody"}
    for item in document.get("paths", {}).values():
        for operation in item.values():
            invalid = operation.get("responses", {}).get("422")
            content = (invalid or {}).get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                invalid["description"] = _MEANING[422]
                content["schema"] = ours
    schemas = document.get("components", {}).get("schemas", {})
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
    schemas.setdefault("ErrorDetail", ErrorDetail.model_json_schema())
    schemas["ErrorBody"].pop("$defs", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def with_one_error_shape(app: FastAPI) -> None:
    """Publish ``app``'s OpenAPI document with every 422 in the error body shape (built once, then cached)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _error_shape_everywhere(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
