"""Hostile media: files that would make ffmpeg read something other than themselves.

An uploaded "video" that is an HLS playlist or an ffconcat list names other
files (here: another tenant's video and a secret text file, both outside the
directory the job was given); an image-sequence pattern in a name reads a
neighbour; a checkpoint segment could be a playlist too. Each job must fail
with exit 65 naming the field and saying what the file is, write no output,
and never show the secret's bytes; normal inputs keep working
(tests/integration/test_video.py, test_worker.py, test_bad_input.py).

Each case runs ``fusionctl swap`` in a subprocess, as the worker runs the core.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceswap import BadInput
from faceswap.checkpoint import LocalCheckpoint, Manifest
from faceswap.media import probe
from faceswap.pipeline import _verify_segments
from faceswap.video import concat_segments
from tests.support.media import make_clip

pytestmark = pytest.mark.slow

EXIT_BAD_INPUT = 65
SECRET_TEXT = "tenant-a-secret: 4f1c2d9e-never-shown\n"
CLI_TIMEOUT_S = 120


@dataclass(frozen=True)
class Secrets:
    """Another tenant's files, outside the folder the attacker's inputs live in."""

    video: Path
    text: Path


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Secrets:
    folder = tmp_path_factory.mktemp("tenant-a")
    video = make_clip(folder / "private.mp4", astronaut, frames=12, fps=12, audio=False)
    ts = folder / "private.ts"  # what an HLS playlist's segment usually is
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(video), "-c", "copy", "-f", "mpegts", str(ts)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    text = folder / "secret.txt"
    text.write_text(SECRET_TEXT, encoding="utf-8")
    return Secrets(video=ts, text=text)


def _hls(*entries: Path | str) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:10", "#EXT-X-MEDIA-SEQUENCE:0"]
    for entry in entries:
        lines += ["#EXTINF:1.0,", str(entry)]
    return "\n".join([*lines, "#EXT-X-ENDLIST", ""])


@dataclass
class Job:
    done: subprocess.CompletedProcess[str]
    out_dir: Path


@pytest.fixture
def swap(fusionctl: list[str], tmp_path: Path) -> Callable[..., Job]:
    def run(source: Path, target: Path, output_name: str) -> Job:
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        done = subprocess.run(
            [
                *fusionctl,
                "swap",
                "--source",
                str(source),
                "--target",
                str(target),
                "--output",
                str(out_dir / output_name),
            ],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            env={**os.environ, "TMPDIR": str(tmp_path)},
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return Job(done, out_dir)

    return run


def assert_refused(job: Job, *needles: str) -> None:
    """Exit 65, one error line naming the field and what the file is, no output, no secret anywhere."""
    stderr = job.done.stderr
    assert job.done.returncode == EXIT_BAD_INPUT, f"exit {job.done.returncode}, stderr:\n{stderr}"
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), f"{needle!r} not in {errors[0]!r}"
    assert list(job.out_dir.iterdir()) == [], "a refused job wrote an output"
    assert "tenant-a-secret" not in stderr + job.done.stdout


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(("name", "scheme"), [("upload.mp4", ""), ("upload.mkv", "file://"), ("upload.mov", "")])
def test_hls_playlist_naming_another_tenants_video(
    swap: Callable[..., Job], secrets: Secrets, inputs: Path, source_face_path: Path, name: str, scheme: str
) -> None:
    # before the fix this job succeeded: the output was tenant A's video with the face swapped
    target = inputs / name
    target.write_text(_hls(f"{scheme}{secrets.video}"), encoding="utf-8")
    assert_refused(swap(source_face_path, target, "result.mp4"), "target", "an HLS playlist is not a video")


def test_hls_playlist_naming_a_secret_text_file(
    swap: Callable[..., Job], secrets: Secrets, inputs: Path, source_face_path: Path
) -> None:
    target = inputs / "upload.mp4"
    target.write_text(_hls(secrets.text, f"file://{secrets.text}"), encoding="utf-8")
    assert_refused(swap(source_face_path, target, "result.mp4"), "target", "an HLS playlist is not a video")


def test_hls_playlist_behind_a_byte_order_mark_and_blank_lines(
    swap: Callable[..., Job], secrets: Secrets, inputs: Path, source_face_path: Path
) -> None:
    target = inputs / "upload.mp4"
    target.write_bytes(b"\xef\xbb\xbf\n\n" + _hls(secrets.video).encode())
    assert_refused(swap(source_face_path, target, "result.mp4"), "target", "HLS playlist")


def test_ffconcat_list_naming_another_tenants_video(
    swap: Callable[..., Job], secrets: Secrets, inputs: Path, source_face_path: Path
) -> None:
    target = inputs / "upload.mp4"
    target.write_text(f"ffconcat version 1.0\nfile '{secrets.video}'\nfile '{secrets.text}'\n", encoding="utf-8")
    assert_refused(swap(source_face_path, target, "result.mp4"), "target", "an ffconcat list is not a video")


def test_dash_manifest(swap: Callable[..., Job], secrets: Secrets, inputs: Path, source_face_path: Path) -> None:
    target = inputs / "upload.mp4"
    target.write_text(
        '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">'
        f"<BaseURL>file://{secrets.video}</BaseURL></MPD>\n",
        encoding="utf-8",
    )
    assert_refused(swap(source_face_path, target, "result.mp4"), "target", "DASH manifest")


def test_mp4_that_is_a_text_file(swap: Callable[..., Job], inputs: Path, source_face_path: Path) -> None:
    target = inputs / "upload.mp4"
    target.write_text(f"file:{inputs}/../secret\nsubfile,,start,0,end,0,,:/etc/passwd\n", encoding="utf-8")
    assert_refused(swap(source_face_path, target, "result.mp4"), "target", "a text file is not a video")


def test_mpegts_is_not_accepted_from_users(
    swap: Callable[..., Job], secrets: Secrets, inputs: Path, source_face_path: Path
) -> None:
    # the one extra container the pipeline reads is its own segments' (MPEG-TS); an input is not one
    target = inputs / "upload.mp4"
    shutil.copyfile(secrets.video, target)
    assert_refused(swap(source_face_path, target, "result.mp4"), "target", "an MPEG-TS stream is not a video")


def test_source_image_that_is_a_playlist(
    swap: Callable[..., Job], secrets: Secrets, inputs: Path, astronaut_path: Path
) -> None:
    source = inputs / "face.png"
    source.write_text(_hls(secrets.video), encoding="utf-8")
    assert_refused(swap(source, astronaut_path, "result.png"), "source", "an HLS playlist is not an image")


def test_image_named_like_a_sequence_pattern_is_read_as_itself(
    swap: Callable[..., Job], inputs: Path, source_face_path: Path, astronaut: np.ndarray
) -> None:
    # "frame%03d.png" would make ffmpeg's image2 demuxer read frame001.png, frame002.png...
    target = inputs / "frame%03d.png"
    assert cv2.imwrite(str(target), astronaut)
    assert cv2.imwrite(str(inputs / "frame001.png"), np.zeros((48, 64, 3), np.uint8))
    info = probe(target, field="target")
    assert (info.width, info.height) == (astronaut.shape[1], astronaut.shape[0])
    job = swap(source_face_path, target, "result.png")
    assert job.done.returncode == 0, job.done.stderr
    assert cv2.imread(str(job.out_dir / "result.png")).shape == astronaut.shape


def test_a_checkpoint_segment_that_is_a_playlist_is_not_followed(
    tmp_path: Path, secrets: Secrets, astronaut: np.ndarray
) -> None:
    """Our concat of our own segments: even if a segment's bytes were a playlist, it reads MPEG-TS only."""
    own = make_clip(tmp_path / "own.mp4", astronaut, frames=6, fps=12, audio=False)
    info = probe(own, field="target")
    workdir = tmp_path / "job"
    workdir.mkdir()
    segment = workdir / "segment-000000.ts"
    segment.write_text(_hls(secrets.video), encoding="utf-8")
    output = tmp_path / "out.mp4"
    with pytest.raises(BadInput) as refused:
        concat_segments([segment], source=own, info=info, output=output, container=".mp4", workdir=workdir)
    assert refused.value.field == "output"
    assert not output.exists() or output.stat().st_size == 0


def test_a_manifest_naming_a_path_instead_of_a_segment_is_redone(tmp_path: Path, secrets: Secrets) -> None:
    store = LocalCheckpoint(tmp_path / "checkpoint")
    digest = hashlib.sha256(secrets.video.read_bytes()).hexdigest()
    escape = os.path.relpath(secrets.video, store.root)
    manifest = Manifest(
        fingerprint={}, segment_frames=10, segments={0: {"file": escape, "sha256": digest, "frames": 10}}
    )
    store.write_manifest(manifest)
    workdir = tmp_path / "job"
    workdir.mkdir()
    events: list[tuple[str, dict[str, object]]] = []
    _verify_segments(store, manifest, workdir, lambda event, fields: events.append((event, fields)))
    assert manifest.segments == {}
    assert [event for event, _ in events] == ["segment_invalid"]
    assert list(workdir.iterdir()) == [], "the named file was copied into the job"


def test_an_ordinary_mp4_still_swaps(
    swap: Callable[..., Job], tmp_path: Path, source_face_path: Path, astronaut: np.ndarray
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", astronaut, frames=6, fps=12)
    info = probe(clip, field="target")
    assert (info.demuxer, info.is_video, info.frames) == ("mov", True, 6)
    job = swap(source_face_path, clip, "result.mp4")
    assert job.done.returncode == 0, job.done.stderr
    assert probe(job.out_dir / "result.mp4", field="output").frames == 6
