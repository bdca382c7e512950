"""Inputs, outputs and checkpoints by URI: s3:// (a local moto server), http://, file://.

Everything runs :func:`faceswap.run_swap` in-process against servers bound to
127.0.0.1 on ephemeral ports; nothing leaves the machine.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import cv2
import numpy as np
import pytest

import faceswap.pipeline
from faceswap import BadInput, NoFaceFound, SwapOptions, run_swap
from faceswap.errors import FaceSwapError
from faceswap.media import probe
from faceswap.uris import parse_uri
from tests.support.aws import moto_server
from tests.support.loopback import serving
from tests.support.storage import allow_loopback

pytestmark = pytest.mark.slow

CLIP_FRAMES = 20
CLIP_SIZE = (320, 240)
SEGMENT_FRAMES = 8


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, on a port the OS picks."""
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Any, str]:
    """A boto3 client on the moto server and a fresh, empty bucket."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # credentials/endpoint come from this env
    client = boto3.client("s3")
    bucket = f"fp-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``(base URL, served directory)`` of a static HTTP server on 127.0.0.1."""
    root = tmp_path_factory.mktemp("www")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    with serving(server):
        yield f"http://127.0.0.1:{server.server_address[1]}", root


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx and botocore honour proxy variables; the servers here are local
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- media


@pytest.fixture(scope="module")
def faceless_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faceless") / "wall.png"
    gradient = np.tile(np.linspace(40, 200, 300, dtype=np.uint8), (200, 1))
    assert cv2.imwrite(str(path), cv2.merge([gradient, gradient, gradient]))
    return path


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory, astronaut_path: Path) -> Path:
    """A 20-frame 320x240 H.264 clip of the astronaut, slowly zooming so frames differ."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    width, height = CLIP_SIZE
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-loop",
            "1",
            "-framerate",
            "10",
            "-i",
            str(astronaut_path),
            "-vf",
            f"scale=w='{width}+2*n':h='{height}+2*n':eval=frame,crop={width}:{height}",
            "-frames:v",
            str(CLIP_FRAMES),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    info = probe(path, field="clip")
    assert (info.width, info.height, info.frames) == (width, height, CLIP_FRAMES)
    return path


def _keys(client: Any, bucket: str, prefix: str = "") -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def _exists(client: Any, bucket: str, key: str) -> bool:
    return key in _keys(client, bucket, key)


def _decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, "the output is not a decodable image"
    return image


def _upload_inputs(client: Any, bucket: str, source: Path, target: Path) -> tuple[str, str]:
    client.upload_file(str(source), bucket, "in/source.png")
    client.upload_file(str(target), bucket, "in/target.png")
    return f"s3://{bucket}/in/source.png", f"s3://{bucket}/in/target.png"


# --------------------------------------------------------------------------- s3


def test_s3_image_swap_publishes_only_after_success(
    s3: tuple[Any, str],
    source_face_path: Path,
    astronaut_path: Path,
    astronaut: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, bucket = s3
    source, target = _upload_inputs(client, bucket, source_face_path, astronaut_path)
    output_key = "out/result.png"
    seen_while_writing: list[bool] = []
    real_write_image = faceswap.pipeline.write_image

    def spying_write_image(path: Path, *args: Any, **kwargs: Any) -> None:
        real_write_image(path, *args, **kwargs)
        # the encoded image exists locally; the object must not exist yet
        seen_while_writing.append(_exists(client, bucket, output_key))

    monkeypatch.setattr(faceswap.pipeline, "write_image", spying_write_image)
    result = run_swap(source=source, target=target, output=f"s3://{bucket}/{output_key}")

    assert seen_while_writing == [False]
    assert result.kind == "image"
    assert result.output == f"s3://{bucket}/{output_key}"
    assert result.faces_swapped >= 1
    assert _keys(client, bucket) == {"in/source.png", "in/target.png", output_key}
    body = client.get_object(Bucket=bucket, Key=output_key)["Body"].read()
    assert body.startswith(b"\x89PNG\r\n\x1a\n")
    image = _decode(body)
    assert image.shape == astronaut.shape
    changed = np.any(image.astype(np.int16) != astronaut.astype(np.int16), axis=2)
    assert 0 < changed.mean() < 0.5, "a face should change, not the whole picture"


def test_s3_checkpoint_commits_segments_and_a_rerun_skips_them(
    s3: tuple[Any, str], source_face_path: Path, clip_path: Path, tmp_path: Path
) -> None:
    client, bucket = s3
    checkpoint = f"s3://{bucket}/ckpt/job-1"
    options = SwapOptions(segment_frames=SEGMENT_FRAMES, preset="ultrafast")
    expected_segments = -(-CLIP_FRAMES // SEGMENT_FRAMES)
    events: list[str] = []

    first = run_swap(
        source=str(source_face_path),
        target=str(clip_path),
        output=str(tmp_path / "first.mp4"),
        options=options,
        checkpoint=checkpoint,
        on_event=lambda event, _f: events.append(event),
    )

    assert (first.frames, first.frames_swapped) == (CLIP_FRAMES, CLIP_FRAMES)
    assert (first.segments_done, first.segments_skipped) == (expected_segments, 0)
    assert first.faces_swapped >= CLIP_FRAMES // 2
    assert events.count("segment_committed") == expected_segments
    segment_names = {f"segment-{i:06d}.ts" for i in range(expected_segments)}
    assert _keys(client, bucket, "ckpt/job-1/") == {f"ckpt/job-1/{n}" for n in {"manifest.json", *segment_names}}
    manifest = json.loads(client.get_object(Bucket=bucket, Key="ckpt/job-1/manifest.json")["Body"].read())
    assert manifest["segment_frames"] == SEGMENT_FRAMES
    assert {s["file"] for s in manifest["segments"].values()} == segment_names
    assert sum(s["frames"] for s in manifest["segments"].values()) == CLIP_FRAMES
    info = probe(tmp_path / "first.mp4", field="output")
    assert (info.width, info.height, info.frames) == (*CLIP_SIZE, CLIP_FRAMES)

    events.clear()
    second = run_swap(
        source=str(source_face_path),
        target=str(clip_path),
        output=str(tmp_path / "second.mp4"),
        options=options,
        checkpoint=checkpoint,
        on_event=lambda event, _f: events.append(event),
    )

    assert second.segments_skipped == expected_segments
    assert (second.segments_done, second.frames_swapped, second.faces_swapped) == (0, 0, 0)
    assert second.frames == CLIP_FRAMES
    assert events.count("segment_skipped") == expected_segments
    assert "checkpoint_reset" not in events
    info = probe(tmp_path / "second.mp4", field="output")
    assert (info.width, info.height, info.frames) == (*CLIP_SIZE, CLIP_FRAMES)


def test_failing_job_leaves_no_s3_output(s3: tuple[Any, str], faceless_path: Path, astronaut_path: Path) -> None:
    client, bucket = s3
    source, target = _upload_inputs(client, bucket, faceless_path, astronaut_path)
    with pytest.raises(NoFaceFound) as caught:
        run_swap(source=source, target=target, output=f"s3://{bucket}/out/result.png")
    assert caught.value.field == "source"
    assert _keys(client, bucket) == {"in/source.png", "in/target.png"}


def test_failure_while_writing_leaves_no_s3_output(
    s3: tuple[Any, str], source_face_path: Path, astronaut_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, bucket = s3
    source, target = _upload_inputs(client, bucket, source_face_path, astronaut_path)

    def half_written(path: Path, *_args: Any, **_kwargs: Any) -> None:
        path.write_bytes(b"\x89PNG\r\n\x1a\n half an image")
        raise BadInput("could not encode the output as .png", field="output")

    monkeypatch.setattr(faceswap.pipeline, "write_image", half_written)
    with pytest.raises(BadInput, match="could not encode"):
        run_swap(source=source, target=target, output=f"s3://{bucket}/out/result.png")
    assert _keys(client, bucket) == {"in/source.png", "in/target.png"}


def test_truncated_video_leaves_no_s3_output(
    s3: tuple[Any, str], source_face_path: Path, clip_path: Path, tmp_path: Path
) -> None:
    client, bucket = s3
    data = clip_path.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    client.upload_file(str(truncated), bucket, "in/truncated.mp4")
    with pytest.raises(BadInput) as caught:
        run_swap(
            source=str(source_face_path),
            target=f"s3://{bucket}/in/truncated.mp4",
            output=f"s3://{bucket}/out/result.mp4",
            options=SwapOptions(segment_frames=SEGMENT_FRAMES, preset="ultrafast"),
        )
    assert caught.value.field == "target"
    assert _keys(client, bucket) == {"in/truncated.mp4"}


def test_s3_output_to_a_missing_bucket_is_bad_input(
    s3: tuple[Any, str], source_face_path: Path, astronaut_path: Path
) -> None:
    missing = f"fp-missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(BadInput) as caught:
        run_swap(source=str(source_face_path), target=str(astronaut_path), output=f"s3://{missing}/out.png")
    assert caught.value.field == "output"
    assert f"s3://{missing}/out.png" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_s3_checkpoint_in_a_missing_bucket_is_bad_input(
    s3: tuple[Any, str], source_face_path: Path, clip_path: Path, tmp_path: Path
) -> None:
    missing = f"fp-missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(BadInput) as caught:
        run_swap(
            source=str(source_face_path),
            target=str(clip_path),
            output=str(tmp_path / "out.mp4"),
            checkpoint=f"s3://{missing}/ckpt",
            options=SwapOptions(segment_frames=SEGMENT_FRAMES),
        )
    assert caught.value.field == "checkpoint"
    assert "NoSuchBucket" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("missing", ["source", "target"])
def test_missing_s3_key_names_the_field(
    s3: tuple[Any, str], missing: str, source_face_path: Path, astronaut_path: Path, tmp_path: Path
) -> None:
    client, bucket = s3
    source, target = _upload_inputs(client, bucket, source_face_path, astronaut_path)
    uris = {"source": source, "target": target}
    uris[missing] = f"s3://{bucket}/in/no-such-key.png"
    with pytest.raises(BadInput) as caught:
        run_swap(source=uris["source"], target=uris["target"], output=str(tmp_path / "out.png"))
    assert caught.value.field == missing
    assert str(caught.value).startswith(f"{missing}: ")
    assert uris[missing] in str(caught.value)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- http


def test_http_inputs(
    http_root: tuple[str, Path],
    source_face_path: Path,
    astronaut_path: Path,
    astronaut: np.ndarray,
    tmp_path: Path,
) -> None:
    base, root = http_root
    shutil.copyfile(source_face_path, root / "source.png")
    shutil.copyfile(astronaut_path, root / "target.png")
    output = tmp_path / "out.png"
    # a query string (a presigned URL's signature) is not part of the file name
    result = run_swap(
        source=f"{base}/source.png",
        target=f"{base}/target.png?X-Sig=a/b.c&x=1",
        output=str(output),
        fetch_rules=allow_loopback(base),  # the operator's explicit allow of this internal host
    )
    assert result.faces_swapped >= 1
    image = _decode(output.read_bytes())
    assert image.shape == astronaut.shape
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


@pytest.mark.parametrize("missing", ["source", "target"])
def test_http_404_names_the_field(
    http_root: tuple[str, Path], missing: str, source_face_path: Path, astronaut_path: Path, tmp_path: Path
) -> None:
    base, root = http_root
    shutil.copyfile(source_face_path, root / "source.png")
    shutil.copyfile(astronaut_path, root / "target.png")
    uris = {"source": f"{base}/source.png", "target": f"{base}/target.png"}
    uris[missing] = f"{base}/nowhere/{missing}.png"
    with pytest.raises(BadInput) as caught:
        run_swap(
            source=uris["source"],
            target=uris["target"],
            output=str(tmp_path / "out.png"),
            fetch_rules=allow_loopback(base),
        )
    assert caught.value.field == missing
    assert "404" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_http_connection_refused_is_bad_input(source_face_path: Path, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and is closed now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BadInput) as caught:
        run_swap(
            source=str(source_face_path),
            target=f"http://127.0.0.1:{port}/target.png",
            output=str(tmp_path / "out.png"),
            fetch_rules=allow_loopback(f"http://127.0.0.1:{port}"),
        )
    assert caught.value.field == "target"
    # the words of every failure to connect: no socket error text to tell closed from filtered
    assert caught.value.message == f"cannot read http://127.0.0.1:{port}/target.png: cannot connect to 127.0.0.1:{port}"
    assert list(tmp_path.iterdir()) == []


def test_http_output_is_refused(source_face_path: Path, astronaut_path: Path) -> None:
    with pytest.raises(BadInput) as caught:
        run_swap(source=str(source_face_path), target=str(astronaut_path), output="http://127.0.0.1:9/out.png")
    assert caught.value.field == "output"


# --------------------------------------------------------------------------- file://


def test_file_uris(source_face_path: Path, astronaut_path: Path, astronaut: np.ndarray, tmp_path: Path) -> None:
    folder = tmp_path / "with space"
    folder.mkdir()
    shutil.copyfile(astronaut_path, folder / "target.png")
    output = folder / "out put.png"
    result = run_swap(
        source=f"file://{source_face_path}",
        target=f"file://localhost{folder}/target.png".replace(" ", "%20"),
        output=f"file://{output}".replace(" ", "%20"),
    )
    assert result.faces_swapped >= 1
    assert _decode(output.read_bytes()).shape == astronaut.shape
    assert sorted(p.name for p in folder.iterdir()) == ["out put.png", "target.png"]


def test_missing_file_uri_names_the_field(source_face_path: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInput) as caught:
        run_swap(source=str(source_face_path), target=f"file://{tmp_path}/absent.png", output=str(tmp_path / "out.png"))
    assert caught.value.field == "target"
    assert "does not exist" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- parse_uri


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        ("in\x00put.png", "control characters"),
        ("in\nput.png", "control characters"),
        ("s3://bucket/key\r.png", "control characters"),
        ("in\x1b[31mput.png", "control characters"),
        ("in\x7fput.png", "control characters"),
        ("in\x85put.png", "control characters"),
        ("s3://bucket-without-key", "bucket and a key"),
        ("s3://bucket-without-key/", "bucket and a key"),
        ("s3:///key-without-bucket.png", "bucket and a key"),
        ("file://remotehost/x.png", "local path"),
        ("ftp://example.com/x.png", "unsupported URI scheme"),
        ("http:///x.png", "no host"),
    ],
)
def test_parse_uri_rejects(uri: str, message: str) -> None:
    with pytest.raises(BadInput, match=message) as caught:
        parse_uri(uri, field="target")
    assert caught.value.field == "target"


@pytest.mark.parametrize(
    ("uri", "scheme", "bucket", "path"),
    [
        ("relative/x.png", "file", "", "relative/x.png"),
        ("/abs/x.png", "file", "", "/abs/x.png"),
        ("file:///abs/x%20y.png", "file", "", "/abs/x y.png"),
        ("file://localhost/abs/x.png", "file", "", "/abs/x.png"),
        ("s3://bucket/a/b/x.png", "s3", "bucket", "a/b/x.png"),
        ("S3://bucket/x.png", "s3", "bucket", "x.png"),
        ("https://example.com/x.png?sig=1", "https", "", "https://example.com/x.png?sig=1"),
    ],
)
def test_parse_uri_accepts(uri: str, scheme: str, bucket: str, path: str) -> None:
    location = parse_uri(uri, field="source")
    assert (location.scheme, location.bucket, location.path, location.raw) == (scheme, bucket, path, uri)


def test_a_bucket_on_an_s3_compatible_store_is_reached_at_the_endpoint_the_spec_names(
    s3: tuple[Any, str],
    moto_endpoint: str,
    source_face_path: Path,
    astronaut_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the worker's own S3 endpoint goes nowhere: only the spec's s3_endpoints reaches the store's bucket
    client, bucket = s3
    source, target = _upload_inputs(client, bucket, source_face_path, astronaut_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    assert parse_uri(source, field="source", s3_endpoints={bucket: moto_endpoint}).endpoint == moto_endpoint
    result = run_swap(
        source=source,
        target=target,
        output=f"s3://{bucket}/out/minio.png",
        s3_endpoints={bucket: moto_endpoint},
    )
    assert result.faces_swapped >= 1
    assert "out/minio.png" in _keys(client, bucket)
    with pytest.raises(FaceSwapError, match="source"):  # without it, boto3's endpoint: nothing listens there
        run_swap(source=source, target=target, output=f"s3://{bucket}/out/lost.png")


def _closed_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])
