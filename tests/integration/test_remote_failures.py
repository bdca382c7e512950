"""Storage that fails: temporary failures (exit 75, retry) versus bad input (exit 65).

A loopback HTTP server plays a flaky CDN and a throttling S3 endpoint; the
real httpx and boto3 clients talk to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from faceswap import BadInput, run_swap
from faceswap.errors import EXIT_BAD_INPUT, EXIT_PREEMPTED, TemporaryFailure
from tests.support.loopback import serving
from tests.support.storage import allow_loopback

S3_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>1</RequestId></Error>"
)


class Flaky(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Flaky

    def _answer(self) -> None:
        self.server.requests += 1
        status = int(self.path.strip("/").split("/")[0]) if self.path.strip("/")[:3].isdigit() else 503
        body = S3_SLOW_DOWN if status == 503 else b"nope"
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = _answer  # noqa: N815 (http.server names its handlers so)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def flaky() -> Iterator[Flaky]:
    with serving(Flaky()) as server:
        yield server


@pytest.mark.parametrize(
    ("status", "expected"), [(503, TemporaryFailure), (429, TemporaryFailure), (404, BadInput), (403, BadInput)]
)
def test_http_input_status_decides_retry_or_not(
    flaky: Flaky, tmp_path: Path, astronaut_path: Path, status: int, expected: type[Exception]
) -> None:
    with pytest.raises(expected) as info:
        run_swap(
            source=f"{flaky.url}/{status}/face.png",
            target=str(astronaut_path),
            output=str(tmp_path / "o.png"),
            fetch_rules=allow_loopback(flaky.url),  # the operator's explicit allow of this internal host
        )
    assert info.value.field == "source"  # type: ignore[attr-defined]
    assert str(status) in str(info.value)
    assert not (tmp_path / "o.png").exists()


def test_throttled_s3_is_a_temporary_failure_with_exit_75(
    flaky: Flaky, tmp_path: Path, astronaut_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", flaky.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(TemporaryFailure) as info:
        run_swap(source="s3://faces/in/face.png", target=str(astronaut_path), output=str(tmp_path / "o.png"))
    assert info.value.exit_code == EXIT_PREEMPTED
    assert info.value.field == "source"
    assert "503" in str(info.value)  # the first call is a HEAD, whose 503 carries no error body
    assert flaky.requests >= 2  # boto3 retried before giving up: fail fast, but not on the first blip


def test_bad_input_and_temporary_failures_have_distinct_exit_codes() -> None:
    assert BadInput("x").exit_code == EXIT_BAD_INPUT
    assert TemporaryFailure("x").exit_code == EXIT_PREEMPTED
    assert TemporaryFailure("x").kind == "temporary"
