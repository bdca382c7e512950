"""Resumable uploads (tus 1.0.0 under /v1/uploads/) against the real API server on 127.0.0.1.

Creation, HEAD, PATCH with per-chunk sha256, completion with the whole
file's sha256, termination, expiry and the quota; and a 1 GiB upload whose
connection is dropped halfway, resumed from HEAD's offset. The hostile
inputs are in tests/security/test_upload_protocol.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from controlplane.api.upload_state import read_state, write_state
from controlplane.api.uploads import prune_uploads
from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import ACME, GLOBEX, ApiServer
from tests.support.tus import TUS, create, metadata, patch

URI = "fusionplane-upload-uri"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("tus")
    engine = make_engine(f"sqlite:///{root / 'plane.db'}")
    upgrade(engine=engine)
    with ApiServer.start(
        Store(engine),
        root,
        max_upload_bytes=1 << 20,
        upload_chunk_max_bytes=256 << 10,
        upload_quota_bytes=2 << 20,
    ) as server:
        yield server


@pytest.fixture
def client(api: ApiServer) -> httpx.Client:
    return api.client(ACME)


def folder_of(api: ApiServer, location: str, tenant: str = "acme") -> Path:
    return api.input_root / tenant / location.rsplit("/", 1)[1]


def test_options_says_what_this_server_speaks(api: ApiServer) -> None:
    response = api.client().options("/v1/uploads/")
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0"
    assert set(response.headers["tus-extension"].split(",")) == {"creation", "checksum", "termination", "expiration"}
    assert response.headers["tus-max-size"] == str(1 << 20)
    assert response.headers["tus-checksum-algorithm"] == "sha256"


def test_an_upload_in_chunks_becomes_an_input_only_once_complete(api: ApiServer, client: httpx.Client) -> None:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(300_000 - 8)  # a face: the submit below checks its first bytes
    digest = hashlib.sha256(data).hexdigest()
    location = create(client, len(data), filename="face.png", sha256=digest)
    assert location.startswith("/v1/uploads/upl_")
    head = client.head(location, headers=TUS)
    assert head.status_code == 200
    assert (head.headers["upload-offset"], head.headers["upload-length"]) == ("0", str(len(data)))
    assert "upload-expires" in head.headers
    assert head.headers["tus-resumable"] == "1.0.0"
    assert head.headers["cache-control"] == "no-store"
    assert URI not in head.headers

    first = patch(client, location, 0, data[:200_000])
    assert first.status_code == 204, first.text
    assert first.headers["upload-offset"] == "200000"
    assert URI not in first.headers
    # the half-sent file is in the tenant's folder, and still no task may read it
    part = folder_of(api, location) / ".tus.part"
    assert part.stat().st_size == 200_000
    refused = client.post("/v1/tasks", json={"source": str(part), "target": api.image()})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == "source"

    last = patch(client, location, 200_000, data[200_000:])
    assert last.status_code == 204, last.text
    uri = last.headers[URI]
    assert Path(uri) == folder_of(api, location) / "face.png"
    assert Path(uri).read_bytes() == data
    assert oct(Path(uri).stat().st_mode & 0o777) == oct(0o600)
    head = client.head(location, headers=TUS)
    assert (head.headers["upload-offset"], head.headers[URI]) == (str(len(data)), uri)
    assert "upload-expires" not in head.headers  # a finished upload is kept by the retention instead
    again = patch(client, location, len(data), b"")  # a last PATCH retried after its answer was lost
    assert (again.status_code, again.headers[URI]) == (204, uri)
    assert patch(client, location, len(data), b"more").status_code == 413
    submitted = client.post("/v1/tasks", json={"source": uri, "target": api.image()})
    assert submitted.status_code == 202, submitted.text


def test_a_chunk_whose_checksum_differs_is_discarded(api: ApiServer, client: httpx.Client) -> None:
    data = os.urandom(1000)
    location = create(client, len(data))
    wrong = patch(client, location, 0, data, **{"Upload-Checksum": f"sha256 {'A' * 43}="})
    assert wrong.status_code == 460, wrong.text
    assert wrong.json()["error"] == {
        "code": "checksum_mismatch",
        "message": wrong.json()["error"]["message"],
        "field": "Upload-Checksum",
    }
    assert client.head(location, headers=TUS).headers["upload-offset"] == "0"
    assert (folder_of(api, location) / ".tus.part").stat().st_size == 0
    assert patch(client, location, 0, data).status_code == 204


def test_a_whole_file_checksum_that_differs_deletes_the_upload(api: ApiServer, client: httpx.Client) -> None:
    data = os.urandom(5000)
    location = create(client, len(data), sha256=hashlib.sha256(b"something else").hexdigest())
    assert patch(client, location, 0, data[:4000]).status_code == 204
    last = patch(client, location, 4000, data[4000:])
    assert last.status_code == 460, last.text
    error = last.json()["error"]
    assert (error["code"], error["field"]) == ("checksum_mismatch", "Upload-Metadata sha256")
    assert "deleted" in error["message"]
    assert not folder_of(api, location).exists()
    assert client.head(location, headers=TUS).status_code == 404


def test_a_chunk_without_checksum_is_kept_as_it_arrives(client: httpx.Client) -> None:
    data = os.urandom(2048)
    location = create(client, len(data))
    assert patch(client, location, 0, data[:1000], checksum=False).status_code == 204
    assert patch(client, location, 1000, data[1000:], checksum=False).headers["upload-offset"] == "2048"


def test_two_patches_at_once_one_wins_and_the_bytes_never_interleave(api: ApiServer, client: httpx.Client) -> None:
    data = os.urandom(64 * 1024)
    location = create(client, len(data))
    folder = folder_of(api, location)
    go_on = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield data[:1024]
        assert go_on.wait(10)
        yield data[1024:]

    answers: list[httpx.Response] = []
    headers = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    headers["Content-Length"] = str(len(data))
    first = threading.Thread(
        target=lambda: answers.append(api.client(ACME).patch(location, content=slow_body(), headers=headers))
    )
    first.start()
    held_elsewhere(folder)
    second = patch(client, location, 0, os.urandom(len(data)))
    assert second.status_code == 423, second.text
    assert second.json()["error"]["code"] == "upload_busy"
    assert client.delete(location, headers=TUS).status_code == 423
    go_on.set()
    first.join(10)
    assert answers[0].status_code == 204, answers[0].text
    assert Path(answers[0].headers[URI]).read_bytes() == data


def held_elsewhere(folder: Path, within_s: float = 10.0) -> None:
    """Wait until some request holds the upload's writer lock (the server's flock on the folder)."""
    deadline = time.monotonic() + within_s
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            fcntl.flock(fd, fcntl.LOCK_UN)
            assert time.monotonic() < deadline, "no PATCH took the upload's lock"
            time.sleep(0.01)
    finally:
        os.close(fd)


def test_termination_deletes_an_upload_unless_a_task_reads_it(api: ApiServer, client: httpx.Client) -> None:
    location = create(client, 10)
    deleted = client.delete(location, headers=TUS)
    assert deleted.status_code == 204
    assert deleted.headers["tus-resumable"] == "1.0.0"
    assert not folder_of(api, location).exists()
    assert client.head(location, headers=TUS).status_code == 404

    used = create(client, 18, filename="used.png")
    uri = patch(client, used, 0, b"\x89PNG\r\n\x1a\n0123456789").headers[URI]
    assert client.post("/v1/tasks", json={"source": uri, "target": api.image()}).status_code == 202
    in_use = client.delete(used, headers=TUS)
    assert in_use.status_code == 409, in_use.text
    assert Path(uri).exists()


def test_expired_uploads_answer_410_and_the_retention_job_removes_them(api: ApiServer, client: httpx.Client) -> None:
    expiring, finished = create(client, 100), create(client, 4, filename="kept.bin")
    assert patch(client, finished, 0, b"done").status_code == 204
    folder = folder_of(api, expiring)
    state = read_state(folder)
    assert state is not None
    write_state(folder, state.advanced(offset=0, expires=time.time() - 1))
    assert client.head(expiring, headers=TUS).status_code == 410
    assert patch(client, expiring, 0, b"x" * 100).status_code == 410
    pruned = prune_uploads(root=api.input_root, retention_seconds=86_400, in_use=set)
    assert pruned["expired"] >= 1
    assert not folder.exists()
    assert folder_of(api, finished).exists()  # finished: the retention's age rule, not the expiry


def test_the_quota_counts_each_unfinished_uploads_whole_length(api: ApiServer) -> None:
    client = api.client(GLOBEX)  # a tenant the other tests leave alone
    held = api.client(GLOBEX)
    big = create(held, 1 << 20)  # the quota is 2 MiB: this reserves half, before a byte is sent
    bigger = create(held, 1 << 20)
    refused = client.post("/v1/uploads/", headers={**TUS, "Upload-Length": str(600_000), "Upload-Metadata": metadata()})
    assert refused.status_code == 413, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["field"]) == ("upload_quota_exceeded", "Upload-Length")
    assert client.delete(bigger, headers=TUS).status_code == 204
    assert create(client, 600_000)
    assert client.delete(big, headers=TUS).status_code == 204


def test_the_old_single_put_still_works(client: httpx.Client) -> None:
    response = client.put("/v1/uploads/face.png", content=b"\x89PNG one go")
    assert response.status_code == 201, response.text
    assert Path(response.json()["uri"]).read_bytes() == b"\x89PNG one go"


# --------------------------------------------------------------------------- 1 GiB, interrupted halfway

GIB = 1 << 30


@pytest.fixture
def gib_file(tmp_path: Path) -> tuple[Path, str]:
    """1 GiB: one random MiB written 1024 times (fast, and no two MiB-aligned chunks differ by luck)."""
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    path = tmp_path / "big.bin"
    with path.open("wb") as handle:
        for index in range(GIB >> 20):
            piece = index.to_bytes(8, "big") + block[8:]  # each MiB its own, so a misplaced one is caught
            handle.write(piece)
            digest.update(piece)
    return path, digest.hexdigest()


def send_then_hang_up(url: str, location: str, token: str, *, path: Path, total: int, cut_at: int) -> None:
    """A PATCH announcing ``total`` bytes whose client closes the socket after ``cut_at`` of them."""
    parts = urlsplit(url)
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
        f"Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: 0\r\nContent-Length: {total}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port)) as sock, path.open("rb") as handle:
        sock.sendall(head)
        sent = 0
        while sent < cut_at:
            block = handle.read(min(4 << 20, cut_at - sent))
            sock.sendall(block)
            sent += len(block)


@pytest.mark.slow
def test_a_1_gib_upload_cut_halfway_resumes_from_head_and_is_verified(
    tmp_path: Path, gib_file: tuple[Path, str]
) -> None:
    path, digest = gib_file
    engine = make_engine(f"sqlite:///{tmp_path / 'plane.db'}")
    upgrade(engine=engine)
    with ApiServer.start(
        Store(engine), tmp_path, max_upload_bytes=GIB, upload_chunk_max_bytes=GIB, upload_quota_bytes=2 * GIB
    ) as api:
        client = api.client(ACME)
        location = create(client, GIB, filename="big.bin", sha256=digest)
        send_then_hang_up(api.url, location, ACME, path=path, total=GIB, cut_at=GIB // 2)
        # the server keeps what arrived before the hang-up (no chunk checksum was promised)
        deadline = time.monotonic() + 60
        while (offset := int(client.head(location, headers=TUS).headers["upload-offset"])) < GIB // 2:
            assert time.monotonic() < deadline, f"the server kept {offset} bytes"
            time.sleep(0.05)
        assert offset == GIB // 2

        def rest() -> Iterator[bytes]:
            with path.open("rb") as handle:
                handle.seek(offset)
                while block := handle.read(4 << 20):
                    yield block

        resumed = client.patch(
            location,
            content=rest(),
            headers={
                **TUS,
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(offset),
                "Content-Length": str(GIB - offset),
            },
            timeout=300,
        )
        assert resumed.status_code == 204, resumed.text  # 460 had the whole-file sha256 not matched
        final = Path(resumed.headers[URI])
        assert final.stat().st_size == GIB
        assert final.parent == folder_of(api, location)
        # the part became the file: nothing half-written stays beside it
        assert sorted(p.name for p in final.parent.iterdir()) == [".tus.json", "big.bin"]


def test_bytes_past_the_committed_offset_are_cut_off(api: ApiServer, client: httpx.Client) -> None:
    """A server stopped mid-chunk leaves a part longer than .tus.json says: the next chunk starts at the offset."""
    data = os.urandom(4000)
    location = create(client, len(data))
    assert patch(client, location, 0, data[:1000]).status_code == 204
    with (folder_of(api, location) / ".tus.part").open("ab") as part:
        part.write(b"half of a chunk that never committed")
    assert client.head(location, headers=TUS).headers["upload-offset"] == "1000"
    done = patch(client, location, 1000, data[1000:])
    assert Path(done.headers[URI]).read_bytes() == data
