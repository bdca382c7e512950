"""Local inputs at submit: a missing file or one that is no image/video is a 422 naming the field.

The check reads only files already inside the caller's own input folder: a
path outside it gets the same answer whether it exists or not, so a remote
client learns nothing about the server's files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import ACME, MP4_START, ApiServer, stored_rows


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    try:
        with ApiServer.start(Store(engine), tmp_path) as server:
            yield server
    finally:
        engine.dispose()


def refused(api: ApiServer, body: dict[str, Any], field: str) -> str:
    response: httpx.Response = api.client(ACME).post("/v1/tasks", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    message: str = error["message"]
    return message


def test_a_text_file_named_png_is_refused_at_submit(api: ApiServer) -> None:
    notes = api.image("notes.png", b"these are my notes, not a face\n")
    message = refused(api, api.body(source=notes), "source")
    assert message == "notes.png: a text file is not an image"
    assert stored_rows(api.store) == (0, 0, 0)


@pytest.mark.parametrize(
    ("name", "data", "field", "expected"),
    [
        ("noise.png", b"\x00\x01\x02\x03 noise", "source", "noise.png: its content is not a PNG, JPEG or WebP image"),
        ("empty.png", b"", "source", "empty.png: the file is empty, not an image"),
        ("clip.mp4", b"#EXTM3U\n#EXTINF:1,\n/etc/passwd\n", "target", "clip.mp4: an HLS playlist is not a video"),
        ("clip.mp4", b"\x89PNG\r\n\x1a\n a still", "target", "clip.mp4: its content is an image, not a video"),
        ("scene.png", MP4_START, "target", "scene.png: its content is not a PNG, JPEG or WebP image"),
    ],
)
def test_content_that_is_not_the_media_it_should_be_is_refused(
    api: ApiServer, name: str, data: bytes, field: str, expected: str
) -> None:
    path = api.image(name, data)
    assert refused(api, api.body(**{field: path}), field) == expected


def test_a_missing_file_in_your_own_folder_is_no_such_file(api: ApiServer) -> None:
    typo = str(api.input_root / "acme" / "fcae.png")
    assert refused(api, api.body(source=typo), "source") == f"no such file: {typo}"
    assert refused(api, api.body(source=f"file://{typo}"), "source") == f"no such file: file://{typo}"


def test_outside_your_folder_existence_is_never_told(api: ApiServer, tmp_path: Path) -> None:
    real = tmp_path / "server-secret.png"
    real.write_bytes(b"\x89PNG\r\n\x1a\n a file of the server's")
    other = api.image("theirs.png", tenant="globex")
    absent = tmp_path / "nothing-here.png"
    answers = {
        str(path): refused(api, api.body(source=str(path)), "source").replace(str(path), "PATH")
        for path in (real, absent, other, api.input_root / "globex" / "absent.png")
    }
    assert len(set(answers.values())) == 1, answers
    assert "no such file" not in next(iter(answers.values()))


def test_a_folder_is_not_an_input(api: ApiServer) -> None:
    folder = api.input_root / "acme" / "album.png"
    folder.mkdir(parents=True)
    assert refused(api, api.body(source=str(folder)), "source") == "album.png: not a regular file"


def test_a_fifo_in_your_folder_is_refused_without_blocking_the_server(api: ApiServer) -> None:
    fifo = api.input_root / "acme" / "pipe.png"
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    assert refused(api, api.body(source=str(fifo)), "source") == "pipe.png: not a regular file"
    assert api.client(ACME).get("/healthz").status_code == 200  # the event loop was never stuck on the pipe


def test_real_media_starts_pass(api: ApiServer) -> None:
    for name, data in (
        ("face.jpg", b"\xff\xd8\xff\xe0 jfif"),
        ("face.webp", b"RIFF\x10\x00\x00\x00WEBPVP8 "),
    ):
        source = api.image(name, data)
        for target, start in (
            ("clip.mkv", b"\x1a\x45\xdf\xa3 matroska"),
            ("clip.avi", b"RIFF\x10\x00\x00\x00AVI LIST"),
            ("clip.mov", b"\x00\x00\x00\x14ftypqt  "),
        ):
            response = api.client(ACME).post("/v1/tasks", json=api.body(source=source, target=api.image(target, start)))
            assert response.status_code == 202, response.text
