"""Hostile tus requests against the real API server: another tenant's uploads, lying offsets, bad headers.

Another tenant's upload id answers exactly like an id that never existed
(404, never 403); a refused request names the header at fault and leaves the
upload (and the disk) as it was.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import TENANT_A, TENANT_B, ApiServer
from tests.support.serve_process import served
from tests.support.tus import TUS, b64, create, metadata, patch

LIMIT = 64 * 1024
STREAM = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("tus-edges")
    engine = make_engine(f"sqlite:///{root / 'plane.db'}")
    upgrade(engine=engine)
    with ApiServer.start(Store(engine), root, max_upload_bytes=LIMIT, upload_chunk_max_bytes=16 * 1024) as server:
        yield server


@pytest.fixture
def a(api: ApiServer) -> httpx.Client:
    return api.client(TENANT_A)


@pytest.fixture
def b(api: ApiServer) -> httpx.Client:
    return api.client(TENANT_B)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def error(response: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["field"] == field, body
    return body


# --------------------------------------------------------------------------- another tenant


def test_another_tenants_upload_is_404_like_one_that_never_existed(
    api: ApiServer, a: httpx.Client, b: httpx.Client
) -> None:
    theirs = create(a, 100)
    never = "/v1/uploads/upl_" + "0" * 26
    for location in (theirs, never):
        assert b.head(location, headers=TUS).status_code == 404
        assert error(patch(b, location, 0, b"x" * 100), 404, "upload_id")["code"] == "not_found"
        assert error(b.delete(location, headers=TUS), 404, "upload_id")["code"] == "not_found"
    # the same answer, word for word: nothing tells B that A's id exists
    assert patch(b, theirs, 0, b"x").json() == patch(b, never, 0, b"x").json()
    assert a.head(theirs, headers=TUS).headers["upload-offset"] == "0"  # and A's upload is untouched


@pytest.mark.parametrize(
    "upload_id", ["upl_..%2F..%2Fetc", "..", "upl_" + "0" * 25, "upl_" + "I" * 26, "tsk_" + "0" * 26]
)
def test_ids_that_are_not_upload_ids_are_404(a: httpx.Client, upload_id: str) -> None:
    assert a.head(f"/v1/uploads/{upload_id}", headers=TUS).status_code == 404


def test_a_task_cannot_read_another_tenants_finished_upload(api: ApiServer, a: httpx.Client, b: httpx.Client) -> None:
    location = create(a, 4, filename="face.png")
    uri = patch(a, location, 0, b"face").headers["fusionplane-upload-uri"]
    refused = b.post("/v1/tasks", json={"source": uri, "target": api.image(tenant="tenant-b")})
    assert error(refused, 422, "source")


# --------------------------------------------------------------------------- offsets that lie


@pytest.mark.parametrize(
    ("offset", "status"),
    [("-1", 400), ("1e3", 400), ("0x10", 400), ("", 400), ("99999999999999999999", 400), ("101", 409), ("50", 409)],
)
def test_offsets_that_lie_are_refused_and_change_nothing(
    api: ApiServer, a: httpx.Client, offset: str, status: int
) -> None:
    location = create(a, 100)
    assert patch(a, location, 0, b"x" * 10).status_code == 204
    response = a.patch(location, content=b"y" * 10, headers={**TUS, **STREAM, "Upload-Offset": offset})
    body = error(response, status, "Upload-Offset")
    if status == 409:
        assert response.headers["upload-offset"] == "10"  # where to resume from
        assert body["code"] == "offset_mismatch"
    assert a.head(location, headers=TUS).headers["upload-offset"] == "10"


def test_a_chunk_past_the_declared_length_is_refused(a: httpx.Client) -> None:
    location = create(a, 100)
    error(patch(a, location, 0, b"x" * 101), 413, "Content-Length")
    assert a.head(location, headers=TUS).headers["upload-offset"] == "0"


def test_a_chunk_over_the_chunk_limit_is_refused(a: httpx.Client) -> None:
    location = create(a, LIMIT)
    error(patch(a, location, 0, b"x" * (16 * 1024 + 1)), 413, "Content-Length")

    def unannounced() -> Iterator[bytes]:  # chunked: no Content-Length to refuse up front
        for _ in range(20):
            yield b"x" * 1024

    streamed = a.patch(location, content=unannounced(), headers={**TUS, **STREAM, "Upload-Offset": "0"})
    error(streamed, 413, "body")
    assert a.head(location, headers=TUS).headers["upload-offset"] == "0"


# --------------------------------------------------------------------------- creation


@pytest.mark.parametrize(
    ("length", "status"), [(str(LIMIT + 1), 413), ("-5", 400), ("ten", 400), ("0", 422), ("1.5", 400)]
)
def test_upload_lengths_out_of_bounds_are_refused(api: ApiServer, a: httpx.Client, length: str, status: int) -> None:
    before = files_under(api.input_root)
    response = a.post("/v1/uploads/", headers={**TUS, "Upload-Length": length, "Upload-Metadata": metadata()})
    error(response, status, "Upload-Length")
    assert files_under(api.input_root) == before


@pytest.mark.parametrize(
    "name", ["../escape.png", "a/b.png", "..", ".hidden", "nul\x00.png", "back\\slash.png", "x" * 129, "spa ce.png"]
)
def test_file_names_that_could_leave_the_folder_are_refused(api: ApiServer, a: httpx.Client, name: str) -> None:
    before = files_under(api.input_root)
    response = a.post("/v1/uploads/", headers={**TUS, "Upload-Length": "10", "Upload-Metadata": metadata(name)})
    error(response, 422, "Upload-Metadata filename")
    assert files_under(api.input_root) == before


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("filename not*base64", "Upload-Metadata filename"),
        ("filename " + b64("a.png") + ",sha256 %%%", "Upload-Metadata sha256"),
        ("filename", "Upload-Metadata filename"),
        ("sha256 " + b64("0" * 64), "Upload-Metadata filename"),
        ("=x " + b64("a"), "Upload-Metadata"),
        ("filename " + b64("a.png") + ",filename " + b64("b.png"), "Upload-Metadata"),
        ("filename " + b64("a.png") + ",sha256 " + b64("not hex"), "Upload-Metadata sha256"),
    ],
)
def test_bad_metadata_is_refused_naming_the_key(api: ApiServer, a: httpx.Client, value: str, field: str) -> None:
    before = files_under(api.input_root)
    response = a.post("/v1/uploads/", headers={**TUS, "Upload-Length": "10", "Upload-Metadata": value})
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]["field"] == field
    assert files_under(api.input_root) == before


@pytest.mark.parametrize(
    ("checksum", "message"),
    [("sha256 ***", "base64"), ("md5 " + b64(os.urandom(16)), "sha256"), ("sha256 " + b64(b"short"), "32 bytes")],
)
def test_bad_chunk_checksums_are_refused(a: httpx.Client, checksum: str, message: str) -> None:
    location = create(a, 10)
    body = error(patch(a, location, 0, b"x" * 10, **{"Upload-Checksum": checksum}), 400, "Upload-Checksum")
    assert message in body["message"]
    assert a.head(location, headers=TUS).headers["upload-offset"] == "0"


# --------------------------------------------------------------------------- missing headers, no token


def test_missing_tus_headers_are_named(a: httpx.Client) -> None:
    location = create(a, 10)
    no_version = a.head(location)
    assert no_version.status_code == 412
    assert no_version.headers["tus-version"] == "1.0.0"
    old = a.patch(location, content=b"x", headers={**STREAM, "Tus-Resumable": "0.2.2", "Upload-Offset": "0"})
    assert "0.2.2" in error(old, 412, "Tus-Resumable")["message"]
    error(a.post("/v1/uploads/", headers={"Upload-Length": "1", "Upload-Metadata": metadata()}), 412, "Tus-Resumable")
    error(a.post("/v1/uploads/", headers={**TUS, "Upload-Metadata": metadata()}), 400, "Upload-Length")
    error(a.post("/v1/uploads/", headers={**TUS, "Upload-Length": "1"}), 400, "Upload-Metadata")
    deferred = a.post("/v1/uploads/", headers={**TUS, "Upload-Defer-Length": "1", "Upload-Metadata": metadata()})
    error(deferred, 400, "Upload-Length")
    error(a.patch(location, content=b"x", headers={**TUS, **STREAM}), 400, "Upload-Offset")
    plain = a.patch(
        location, content=b"x", headers={**TUS, "Content-Type": "application/octet-stream", "Upload-Offset": "0"}
    )
    error(plain, 415, "Content-Type")
    assert plain.headers["tus-resumable"] == "1.0.0"  # errors too say which protocol they speak


def test_every_tus_route_but_discovery_needs_a_token(api: ApiServer, a: httpx.Client) -> None:
    location = create(a, 10)
    anonymous = api.client()
    bad = api.client("fp_not-a-real-token-000000000000000000000000")
    for client in (anonymous, bad):
        error(
            client.post("/v1/uploads/", headers={**TUS, "Upload-Length": "1", "Upload-Metadata": metadata()}),
            401,
            "authorization",
        )
        assert client.head(location, headers=TUS).status_code == 401  # HEAD: no body to name the field
        error(patch(client, location, 0, b"x" * 10), 401, "authorization")
        error(client.delete(location, headers=TUS), 401, "authorization")
    assert anonymous.options("/v1/uploads/").status_code == 204  # discovery tells limits, nothing of anyone's
    assert a.head(location, headers=TUS).headers["upload-offset"] == "0"


@pytest.mark.parametrize("name", [".tus.part", ".tus.json", ".tus.json.tmp"])
def test_an_uploads_part_and_bookkeeping_are_never_task_inputs(api: ApiServer, a: httpx.Client, name: str) -> None:
    location = create(a, 10)
    assert patch(a, location, 0, b"x" * 5).status_code == 204
    path = api.input_root / "tenant-a" / location.rsplit("/", 1)[1] / name
    path.touch()
    refused = a.post("/v1/tasks", json={"source": str(path), "target": api.image(tenant="tenant-a")})
    assert "unfinished upload" in error(refused, 422, "source")["message"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_removes_expired_unfinished_uploads_and_logs_counts_only(tmp_path: Path) -> None:
    env = {"FUSIONPLANE_UPLOAD_RETENTION_S": "1", "FUSIONPLANE_UPLOAD_EXPIRY_S": "1"}
    with served(tmp_path, insecure_dev=True, **env) as plane, httpx.Client(base_url=plane.url, timeout=10) as client:
        location = create(client, 100, filename="secret-name.bin")
        assert patch(client, location, 0, b"x" * 50).status_code == 204
        folder = tmp_path / "var" / "inputs" / "dev" / location.rsplit("/", 1)[1]
        assert folder.is_dir()
        deadline = time.monotonic() + 30
        while folder.exists():  # expired a second after its last chunk; the job runs every second
            assert time.monotonic() < deadline, "the retention job did not delete the expired upload"
            time.sleep(0.2)
        assert client.head(location, headers=TUS).status_code == 404
    lines = [line for line in (tmp_path / "serve.log").read_text().splitlines() if "uploads_pruned" in line]
    assert [json.loads(line)["expired"] for line in lines] == [1], lines
    assert not any("secret-name" in line or folder.name in line for line in lines)
