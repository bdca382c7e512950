"""az:// inputs, outputs and checkpoints against Azurite (the real Blob SDK on loopback, nothing patched).

The worker's credential comes from ``AZURE_STORAGE_CONNECTION_STRING`` (the
emulator's well-known account), or from the account key plus the endpoint the
worker spec names for the account (``blob_endpoints``), as on a real VM
whose store is at a non-default address.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from azure.storage.blob import ContainerClient

import faceswap.pipeline
from faceswap import BadInput, Preempted, SwapOptions, run_swap
from faceswap.checkpoint import open_checkpoint
from faceswap.errors import TemporaryFailure
from faceswap.fetcher import FetchRules
from faceswap.media import probe
from faceswap.uris import fetch, parse_uri, write_atomically
from tests.support.azurite import ACCOUNT, Azurite
from tests.support.loopback import free_port, serving

CLIP_FRAMES = 20
CLIP_SIZE = (320, 240)
SEGMENT_FRAMES = 8


@pytest.fixture
def container(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> ContainerClient:
    """A fresh container; the worker's credential from the environment's connection string."""
    for name in ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    client = ContainerClient.from_connection_string(azurite.connection_string, f"fp-{uuid.uuid4().hex[:12]}")
    client.create_container()
    return client


def _az(client: ContainerClient, name: str) -> str:
    return f"az://{ACCOUNT}/{client.container_name}/{name}"


def _names(client: ContainerClient, prefix: str = "") -> set[str]:
    return {b.name for b in client.list_blobs(name_starts_with=prefix or None)}


def _upload(client: ContainerClient, name: str, path: Path) -> str:
    with path.open("rb") as handle:
        client.upload_blob(name, handle, overwrite=True)
    return _az(client, name)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory, astronaut_path: Path) -> Path:
    """A 20-frame 320x240 H.264 clip of the astronaut, slowly zooming so frames differ."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    width, height = CLIP_SIZE
    scale = f"scale=w='{width}+2*n':h='{height}+2*n':eval=frame,crop={width}:{height}"
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-loop", "1", "-framerate", "10", "-i", str(astronaut_path)]
    command += ["-vf", scale, "-frames:v", str(CLIP_FRAMES), "-c:v", "libx264", "-preset", "ultrafast"]
    command += ["-pix_fmt", "yuv420p", str(path)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return path


# --------------------------------------------------------------------------- inputs and outputs


def test_image_swap_reads_and_writes_blobs_and_publishes_only_after_success(
    container: ContainerClient,
    source_face_path: Path,
    astronaut_path: Path,
    astronaut: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = _upload(container, "in/source.png", source_face_path)
    target = _upload(container, "in/target.png", astronaut_path)
    seen_while_writing: list[set[str]] = []
    real_write_image = faceswap.pipeline.write_image

    def spying_write_image(path: Path, *args: Any, **kwargs: Any) -> None:
        real_write_image(path, *args, **kwargs)
        seen_while_writing.append(_names(container))  # encoded locally: the blob must not exist yet

    monkeypatch.setattr(faceswap.pipeline, "write_image", spying_write_image)
    result = run_swap(source=source, target=target, output=_az(container, "out/result.png"))

    assert seen_while_writing == [{"in/source.png", "in/target.png"}]
    assert result.output == _az(container, "out/result.png")
    assert _names(container) == {"in/source.png", "in/target.png", "out/result.png"}
    body = container.download_blob("out/result.png").readall()
    image = cv2.imdecode(np.frombuffer(body, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    assert image.shape == astronaut.shape
    changed = np.any(image.astype(np.int16) != astronaut.astype(np.int16), axis=2)
    assert 0 < changed.mean() < 0.5, "a face should change, not the whole picture"


def test_a_failure_while_writing_leaves_the_old_blob_whole(container: ContainerClient) -> None:
    container.upload_blob("out/result.png", b"the previous result")
    location = parse_uri(_az(container, "out/result.png"), field="output")

    def encoder_dies_halfway() -> None:
        with write_atomically(location) as tmp:
            tmp.write_bytes(b"half an ima")
            raise RuntimeError("encoder died")

    with pytest.raises(RuntimeError, match="encoder died"):
        encoder_dies_halfway()
    assert container.download_blob("out/result.png").readall() == b"the previous result"
    with write_atomically(location) as tmp:
        tmp.write_bytes(b"the new result")
    assert container.download_blob("out/result.png").readall() == b"the new result"
    assert _names(container) == {"out/result.png"}


def test_the_endpoint_may_come_from_the_spec_with_the_key_from_the_environment(
    container: ContainerClient, azurite: Azurite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_KEY", azurite.key)
    container.upload_blob("in/a.bin", b"abc")
    location = parse_uri(_az(container, "in/a.bin"), field="source", blob_endpoints={ACCOUNT: azurite.endpoint})
    assert fetch(location, tmp_path, field="source").read_bytes() == b"abc"


def test_a_worker_run_from_its_spec_reaches_the_account_at_the_spec_endpoint(
    container: ContainerClient,
    azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
    fusionctl: list[str],
    source_face_path: Path,
    astronaut_path: Path,
    tmp_path: Path,
) -> None:
    """As on an Azure VM: the key from the environment, the endpoint only in the spec (``blob_endpoints``)."""
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_KEY", azurite.key)
    folder = f"az://{ACCOUNT}/{container.container_name}/"
    spec = {
        "task_id": "task-az",
        "attempt_id": "att-az",
        "source": _upload(container, "in/source.png", source_face_path),
        "target": _upload(container, "in/target.png", astronaut_path),
        "output": _az(container, "out/result.png"),
        "access": {"az_read": [f"{folder}in/"], "az_write": [f"{folder}out/"]},
        "blob_endpoints": {ACCOUNT: azurite.endpoint},
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run(
        [*fusionctl, "worker", "run", "--spec", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert _names(container) == {"in/source.png", "in/target.png", "out/result.png"}
    assert azurite.key not in done.stderr + done.stdout


def test_a_missing_blob_or_container_is_bad_input_naming_the_field(container: ContainerClient, tmp_path: Path) -> None:
    for uri in (_az(container, "in/nothing.png"), f"az://{ACCOUNT}/no-such-container/in/x.png"):
        with pytest.raises(BadInput) as caught:
            fetch(parse_uri(uri, field="target"), tmp_path, field="target")
        assert caught.value.field == "target"
        assert uri in caught.value.message
        assert "NotFound" in caught.value.message


def test_a_blob_over_the_size_cap_is_refused_before_it_is_read(container: ContainerClient, tmp_path: Path) -> None:
    container.upload_blob("in/big.bin", b"x" * 2048)
    with pytest.raises(BadInput, match="larger than the 1024 byte limit") as caught:
        fetch(
            parse_uri(_az(container, "in/big.bin"), field="source"),
            tmp_path,
            field="source",
            rules=FetchRules(max_bytes=1024),
        )
    assert caught.value.field == "source"
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_key_is_bad_input(
    container: ContainerClient, azurite: Azurite, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    container.upload_blob("in/a.bin", b"abc")
    wrong = azurite.connection_string.replace(azurite.key, "d3Jvbmcga2V5" * 8)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", wrong)
    with pytest.raises(BadInput) as caught:
        fetch(parse_uri(_az(container, "in/a.bin"), field="source"), tmp_path, field="source")
    assert caught.value.field == "source"
    assert "AuthorizationFailure" in caught.value.message or "AuthenticationFailed" in caught.value.message
    assert azurite.key not in caught.value.message


def test_nothing_listening_at_the_endpoint_is_bad_input(container: ContainerClient, tmp_path: Path) -> None:
    dead = {ACCOUNT: f"http://127.0.0.1:{free_port()}/{ACCOUNT}"}
    location = parse_uri(_az(container, "in/a.bin"), field="source", blob_endpoints=dead)
    with pytest.raises(BadInput) as caught:
        fetch(location, tmp_path, field="source")
    assert caught.value.field == "source"


class _BusyHandler(http.server.BaseHTTPRequestHandler):
    """Blob storage under load: every request is 503 ServerBusy."""

    hits = 0

    def _busy(self) -> None:
        type(self).hits += 1
        self.send_response(503)
        self.send_header("x-ms-error-code", "ServerBusy")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._busy()

    def do_HEAD(self) -> None:
        self._busy()

    def do_PUT(self) -> None:
        self._busy()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def busy_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BusyHandler)
    with serving(server):
        yield f"http://127.0.0.1:{server.server_address[1]}/{ACCOUNT}"


def test_throttling_is_a_temporary_failure(container: ContainerClient, busy_endpoint: str, tmp_path: Path) -> None:
    location = parse_uri(_az(container, "in/a.bin"), field="source", blob_endpoints={ACCOUNT: busy_endpoint})
    _BusyHandler.hits = 0
    with pytest.raises(TemporaryFailure) as caught:
        fetch(location, tmp_path, field="source")
    assert caught.value.field == "source"
    assert "ServerBusy" in caught.value.message
    assert _BusyHandler.hits == 3  # the request and two quick retries, then the attempt fails over


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_store_writes_segments_then_the_manifest(container: ContainerClient, tmp_path: Path) -> None:
    store = open_checkpoint(_az(container, "ckpt/job-1"))
    assert store.read_manifest() is None
    segment = tmp_path / "segment-000000.ts"
    segment.write_bytes(b"segment bytes")
    store.put_segment(segment.name, segment)
    assert _names(container) == {"ckpt/job-1/segment-000000.ts"}
    got = tmp_path / "got.ts"
    store.get_segment(segment.name, got)
    assert got.read_bytes() == b"segment bytes"


def test_a_preempted_video_resumes_from_the_segments_committed_in_blob_storage(
    container: ContainerClient, source_face_path: Path, clip_path: Path, tmp_path: Path
) -> None:
    checkpoint = _az(container, "ckpt/acme/task-1")
    target = _upload(container, "in/clip.mp4", clip_path)
    options = SwapOptions(segment_frames=SEGMENT_FRAMES, preset="ultrafast")
    expected_segments = -(-CLIP_FRAMES // SEGMENT_FRAMES)
    stop = threading.Event()

    def preempt_after_first_segment(event: str, _fields: dict[str, Any]) -> None:
        if event == "segment_committed":
            stop.set()  # as SIGTERM does on a spot node being reclaimed

    with pytest.raises(Preempted):
        run_swap(
            source=str(source_face_path),
            target=target,
            output=_az(container, "out/result.mp4"),
            options=options,
            checkpoint=checkpoint,
            stop=stop,
            on_event=preempt_after_first_segment,
        )
    committed = {n for n in _names(container, "ckpt/acme/task-1/") if n.endswith(".ts")}
    assert 1 <= len(committed) < expected_segments
    assert "ckpt/acme/task-1/manifest.json" in _names(container)
    assert "out/result.mp4" not in _names(container)

    events: list[str] = []
    second = run_swap(
        source=str(source_face_path),
        target=target,
        output=_az(container, "out/result.mp4"),
        options=options,
        checkpoint=checkpoint,
        on_event=lambda event, _f: events.append(event),
    )
    assert second.segments_skipped == len(committed)
    assert second.segments_done == expected_segments - len(committed)
    assert second.frames == CLIP_FRAMES
    assert "checkpoint_reset" not in events
    result = tmp_path / "result.mp4"
    result.write_bytes(container.download_blob("out/result.mp4").readall())
    info = probe(result, field="output")
    assert (info.width, info.height, info.frames) == (*CLIP_SIZE, CLIP_FRAMES)
