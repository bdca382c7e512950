"""The OpenAPI document's promises, checked without a server: one error shape, documented patterns that match the
checks they stand for (the live contract test is tests/integration/test_api_fuzz.py)."""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine
from starlette.datastructures import Headers

from controlplane.api.app import create_app
from controlplane.api.auth import TokenRegistry
from controlplane.api.contract import errors, json_body
from controlplane.api.errors import ApiError
from controlplane.api.policies import _VERSION, _resolve
from controlplane.api.schemas import _KNOWN_SUFFIX, TaskCreate
from controlplane.api.task_file import TaskFileError, infer_kind
from controlplane.api.upload_contract import _CHECKSUM, _METADATA
from controlplane.api.upload_headers import chunk_checksum, metadata_header
from controlplane.api.upload_routes import _FILENAME, _SAFE_NAME
from controlplane.config import Settings
from controlplane.domain.callbacks import Completion
from controlplane.store import Store
from tests.support.asgi_server import serving


@pytest.fixture(scope="module")
def app() -> FastAPI:
    _asgi, built = create_app(settings=Settings(), store=Store(create_engine("sqlite://")), tokens=TokenRegistry([]))
    return built


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/v1/tasks", "GET, POST"),
        ("DELETE", "/v1/tasks", "GET, POST"),
        ("PUT", "/v1/tasks/tsk_1", "GET"),
        ("GET", "/v1/uploads/a.png", "DELETE, HEAD, PATCH, PUT"),
    ],
)
def test_a_wrong_method_is_told_every_method_of_the_path(app: FastAPI, method: str, path: str, allow: str) -> None:
    # Starlette alone names the first matching route's methods only (GET /v1/tasks, not POST)
    with serving(app) as url:
        answer = httpx.request(method, url + path, timeout=10)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    assert answer.json()["error"]["code"] == "method_not_allowed"


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{method.upper()} {path}", op) for path, item in document["paths"].items() for method, op in item.items()]


def test_every_error_answer_is_the_error_body(document: dict[str, Any]) -> None:
    for label, operation in _operations(document):
        for status, answer in operation["responses"].items():
            if int(status) < 400 or status == "416":  # 416 is a bare Content-Range answer
                continue
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, f"{label} {status}"


def test_fastapis_own_validation_error_is_not_published(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in document["components"]["schemas"]
    detail = document["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"code", "message", "field"}


def test_authenticated_routes_document_401_and_403(document: dict[str, Any]) -> None:
    open_routes = {"GET /healthz", "GET /readyz", "OPTIONS /v1/uploads/"}
    for label, operation in _operations(document):
        if label not in open_routes:
            assert {"401", "403"} <= set(operation["responses"]), label


def test_metrics_are_documented_as_text(document: dict[str, Any]) -> None:
    assert set(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}


def test_a_why_for_a_status_not_answered_is_a_mistake() -> None:
    with pytest.raises(ValueError, match=r"\[409\]"):
        errors(404, why={409: "never answered"})


def test_an_inlined_body_has_no_dangling_reference() -> None:
    schema = json_body(Completion, required=False)["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in repr(schema)
    assert "$defs" not in schema


@pytest.mark.parametrize(
    "target",
    ["a.png", "A.JPEG", "s3://b/clip.mp4?v=2", "https://h/x.webm#t", "..png", "x/.png", "a.gif", "a.txt?b.png"],
)
def test_the_documented_suffix_rule_is_infer_kind(target: str) -> None:
    try:
        infer_kind(TaskCreate(source="s3://b/a.png", target=target))
        inferred = True
    except TaskFileError:
        inferred = False
    assert bool(re.search(_KNOWN_SUFFIX, target)) == inferred


@pytest.mark.parametrize("name", ["a.png", "-x_1.mp4", ".hidden", "a b", "a/b", "", "é.png", "x" * 128, "x" * 129])
def test_the_documented_file_name_is_the_checked_one(name: str) -> None:
    checked = bool(_SAFE_NAME.match(name)) and not name.startswith(".")
    assert bool(re.search(_FILENAME, name)) == checked


class _NoStore:
    def find_policy_versions(self, *, prefix: str, limit: int) -> list[str]:
        return [prefix + "0" * (64 - len(prefix))]


@pytest.mark.parametrize("version", ["abcdef12", "a" * 64, "abcdef1", "ABCDEF12", "g" * 64, "a" * 65, "abcdef12/"])
def test_the_documented_version_is_the_resolved_one(version: str) -> None:
    try:
        _resolve(_NoStore(), version)  # type: ignore[arg-type]
        resolved = True
    except ApiError:
        resolved = False
    assert bool(re.search(_VERSION, version)) == resolved


class _Request:
    """What the header readers look at: the headers, case-insensitive."""

    def __init__(self, **values: str) -> None:
        self.headers = Headers({k.replace("_", "-"): v for k, v in values.items()})


def _reads(read: Any, **header: str) -> bool:
    try:
        read(_Request(**header))
    except ApiError:
        return False
    return True


@pytest.mark.parametrize(
    ("value", "documented", "read"),
    [
        ("filename YS5wbmc=", True, True),  # a.png
        ("filename YS5wbmc=,sha256 " + base64.b64encode(b"ab" * 32).decode(), True, True),
        ("filename ", False, False),
        ("filename ?", False, False),
        # the server reads more than fusionctl sends (other keys, any order): the schema names the one form
        ("sha256 " + base64.b64encode(b"ab" * 32).decode() + ",filename YS5wbmc=", False, True),
    ],
)
def test_documented_metadata_is_read(value: str, documented: bool, read: bool) -> None:
    assert bool(re.search(_METADATA, value)) == documented
    assert _reads(metadata_header, Upload_Metadata=value) == read


@pytest.mark.parametrize(
    ("value", "documented"),
    [
        ("sha256 " + base64.b64encode(b"x" * 32).decode(), True),
        ("sha256 " + base64.b64encode(b"x" * 31).decode(), False),
        ("md5 " + base64.b64encode(b"x" * 32).decode(), False),
    ],
)
def test_the_documented_checksum_is_the_read_one(value: str, documented: bool) -> None:
    assert bool(re.search(_CHECKSUM, value)) == documented
    assert _reads(chunk_checksum, Upload_Checksum=value) == documented
