"""controlplane/api/ranges.py on a real uvicorn: a tiny app whose one route answers with file_response()."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from controlplane.api.ranges import ByteRange, Unsatisfiable, file_response, parse_range
from tests.support.asgi_server import serving

DATA = os.urandom(3 * 1024 * 1024 + 17)  # a few read chunks and a ragged end
CHUNK = 1 << 20


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ranges")
    (root / "out.mp4").write_bytes(DATA)
    (root / "empty.bin").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def client(files: Path) -> Iterator[httpx.Client]:
    app = FastAPI()

    @app.api_route("/files/{name}", methods=["GET", "HEAD"])
    async def get(name: str, request: Request) -> Response:
        return file_response(request, files / name, media_type="video/mp4", filename=f'sw"ap\nped-{name}')

    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http


def test_no_range_is_the_whole_file(client: httpx.Client) -> None:
    response = client.get("/files/out.mp4")
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-disposition"] == 'attachment; filename="swapped-out.mp4"'
    assert "content-range" not in response.headers
    assert response.headers["etag"].startswith('"')


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=10-", 10, len(DATA) - 1),
        ("bytes=-5", len(DATA) - 5, len(DATA) - 1),
        (f"bytes={CHUNK - 3}-{2 * CHUNK + 3}", CHUNK - 3, 2 * CHUNK + 3),  # across read chunks
        ("bytes=100-99999999999", 100, len(DATA) - 1),  # past the end: up to the end
        ("bytes=-99999999999", 0, len(DATA) - 1),
        (f"bytes={len(DATA) - 1}-", len(DATA) - 1, len(DATA) - 1),
    ],
)
def test_one_range_is_206_with_exactly_those_bytes(client: httpx.Client, header: str, first: int, last: int) -> None:
    response = client.get("/files/out.mp4", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == DATA[first : last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert response.headers["content-length"] == str(last - first + 1)


@pytest.mark.parametrize("header", [f"bytes={len(DATA)}-", f"bytes={len(DATA) + 10}-{len(DATA) + 20}", "bytes=-0"])
def test_a_range_outside_the_file_is_416(client: httpx.Client, header: str) -> None:
    response = client.get("/files/out.mp4", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"
    assert response.content == b""


def test_any_range_of_an_empty_file_is_416_and_the_file_itself_200(client: httpx.Client) -> None:
    assert client.get("/files/empty.bin", headers={"Range": "bytes=0-"}).status_code == 416
    whole = client.get("/files/empty.bin")
    assert (whole.status_code, whole.content, whole.headers["content-length"]) == (200, b"", "0")


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=9-2", "bytes=abc", "bytes=", "bytes=--5"])
def test_ranges_not_served_are_ignored_for_the_whole_file(client: httpx.Client, header: str) -> None:
    response = client.get("/files/out.mp4", headers={"Range": header})
    assert response.status_code == 200
    assert len(response.content) == len(DATA)


def test_if_range_serves_the_range_only_for_the_same_file(client: httpx.Client, files: Path) -> None:
    first = client.get("/files/out.mp4", headers={"Range": "bytes=0-99"})
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    same = client.get("/files/out.mp4", headers={"Range": "bytes=100-199", "If-Range": etag})
    assert (same.status_code, same.content) == (206, DATA[100:200])
    by_date = client.get("/files/out.mp4", headers={"Range": "bytes=100-199", "If-Range": modified})
    assert by_date.status_code == 206
    changed = client.get("/files/out.mp4", headers={"Range": "bytes=100-199", "If-Range": '"not-this-one"'})
    assert (changed.status_code, len(changed.content)) == (200, len(DATA))
    # the file is rewritten: the old ETag no longer gets a range
    (files / "rewritten.bin").write_bytes(b"old bytes")
    old = client.get("/files/rewritten.bin").headers["etag"]
    os.replace(_write(files / "new.tmp", b"new bytes!"), files / "rewritten.bin")
    stale = client.get("/files/rewritten.bin", headers={"Range": "bytes=0-2", "If-Range": old})
    assert (stale.status_code, stale.content) == (200, b"new bytes!")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_head_gives_the_headers_without_the_body(client: httpx.Client) -> None:
    response = client.head("/files/out.mp4", headers={"Range": "bytes=0-9"})
    assert response.status_code == 206
    assert response.headers["content-length"] == "10"
    assert response.headers["content-range"] == f"bytes 0-9/{len(DATA)}"
    assert response.content == b""


def test_parse_range_is_strict_about_what_it_serves() -> None:
    assert parse_range(None, size=10) is None
    assert parse_range("bytes = 2 - 4", size=10) == ByteRange(2, 4)
    assert parse_range("bytes=2-4", size=10) == ByteRange(2, 4)
    assert ByteRange(2, 4).length == 3
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=10-", size=10)
