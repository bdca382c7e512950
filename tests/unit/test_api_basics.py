from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from controlplane.api.errors import install_error_handlers
from controlplane.api.limits import BodyLimit
from controlplane.config import Settings, is_loopback
from tests.support.asgi_server import serving


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("example.com", False),
        ("::", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_insecure_mode_is_refused_off_loopback() -> None:
    Settings(insecure_dev=True, host="127.0.0.1").check()
    with pytest.raises(ValueError, match="loopback"):
        Settings(insecure_dev=True, host="0.0.0.0").check()


class Body(BaseModel):
    name: str
    count: int


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    def echo(body: Body) -> dict[str, object]:
        return {"name": body.name, "count": body.count}

    with serving(BodyLimit(app, max_bytes=64)) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http


def test_small_bodies_pass(client: httpx.Client) -> None:
    assert client.post("/echo", json={"name": "a", "count": 1}).json() == {"name": "a", "count": 1}


def test_a_declared_oversized_body_is_refused_before_reading(client: httpx.Client) -> None:
    response = client.post("/echo", content=b"{" + b" " * 200 + b"}", headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "body_too_large",
        "field": "body",
        "message": "request bodies are limited to 64 bytes",
    }


def test_a_streamed_oversized_body_is_refused(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 10
        yield b'", "count": 1}'

    response = client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("content", "field"),
    [(b"{not json", "body"), (b'{"name": "a"}', "count"), (b'{"name": "a", "count": "many"}', "count")],
)
def test_validation_errors_name_the_field(client: httpx.Client, content: bytes, field: str) -> None:
    response = client.post("/echo", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field
    assert response.json()["error"]["code"] == "invalid"


def test_unknown_routes_use_the_same_error_shape(client: httpx.Client) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
