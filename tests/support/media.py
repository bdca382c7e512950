"""Test clips made with ffmpeg from the astronaut photo, and facts about media files.

Clips come from faceswap.samples (a slow pan and zoom over the astronaut, so
every frame differs and the face stays in view, with a sine tone); this
module adds rotated clips. ``probe_facts`` and
``frame_md5s`` read files back with ffprobe/ffmpeg directly, independently of
the code under test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from faceswap.samples import pan_zoom_frames, write_clip

__all__ = ["MediaFacts", "decoded_frames", "frame_md5s", "make_clip", "probe_facts"]

TIMEOUT_S = 120


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} must be installed for the video tests"
    return found


def make_clip(
    path: Path,
    image: np.ndarray,
    *,
    frames: int = 24,
    fps: int = 24,
    size: tuple[int, int] = (320, 240),
    audio: bool = True,
    rotate: int = 0,
) -> Path:
    """Write an H.264 clip (with an AAC sine tone unless ``audio=False``) and return ``path``.

    ``rotate`` (90, 180, 270; mp4/mov only) is the display rotation, clockwise:
    the coded frames are stored turned the other way and the stream carries a
    display matrix, so a player that honours it shows the astronaut upright
    while the coded frames show her on her side.
    """
    coded = list(pan_zoom_frames(image, frames=frames, size=size))
    if rotate:
        # a player turns the coded frames ``rotate`` degrees clockwise: store them turned the other way
        back = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}[rotate]
        coded = [np.asarray(cv2.rotate(frame, back), dtype=np.uint8) for frame in coded]
        size = (coded[0].shape[1], coded[0].shape[0])
    encoded = path.with_name(f".{path.stem}.norotate{path.suffix}") if rotate else path
    write_clip(coded, encoded, size=size, fps=fps, duration_s=frames / fps, tone_hz=440.0 if audio else None)
    if rotate:
        _tag_rotation(encoded, path, rotate)
        encoded.unlink()
    return path


def _tag_rotation(src: Path, dest: Path, rotate: int) -> None:
    """Remux ``src`` to ``dest`` so its display matrix says "turn ``rotate`` degrees clockwise".

    ffmpeg versions disagree on which way the ``rotate`` tag turns when it is
    written; the stored display matrix is what players (and ffmpeg's own
    autorotate) follow, so try the tag both ways and keep the one that reads
    back right.
    """
    for tag in (rotate, (360 - rotate) % 360):
        subprocess.run(
            [
                _tool("ffmpeg"),
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-i",
                str(src),
                "-map",
                "0",
                "-c",
                "copy",
                "-metadata:s:v:0",
                f"rotate={tag}",
                str(dest),
            ],
            capture_output=True,
            timeout=TIMEOUT_S,
            check=True,
        )
        if probe_facts(dest).rotation == rotate:
            return
    raise AssertionError(f"this ffmpeg cannot tag a clip as rotated {rotate} degrees")


@dataclass(frozen=True)
class MediaFacts:
    width: int
    height: int
    frames: int
    fps: Fraction
    duration: float
    has_audio: bool
    audio_duration: float
    rotation: int

    @property
    def frame_s(self) -> float:
        return float(1 / self.fps)


def _rotation(stream: dict) -> int:
    """Clockwise degrees a player turns the coded frames (the display matrix is counter-clockwise)."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return round(-float(side["rotation"])) % 360
    tag = (stream.get("tags") or {}).get("rotate")
    return int(tag) % 360 if tag else 0


def _count_frames(path: Path) -> int:
    """Frames counted by decoding, for containers that store no count (MPEG-TS, Matroska)."""
    done = subprocess.run(
        [
            _tool("ffprobe"),
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-print_format",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    return int(json.loads(done.stdout)["streams"][0]["nb_read_frames"])


def probe_facts(path: Path) -> MediaFacts:
    """What ffprobe says about the first video and audio streams of ``path``.

    ``frames`` is the container's frame count (``nb_frames``), or a decoded count where it has none.
    """
    done = subprocess.run(
        [_tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    data = json.loads(done.stdout)
    streams = data["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    audio = next((s for s in streams if s["codec_type"] == "audio"), None)
    fps = Fraction(video["avg_frame_rate"])
    duration = float(video.get("duration") or data["format"]["duration"])
    return MediaFacts(
        width=int(video["width"]),
        height=int(video["height"]),
        frames=int(video.get("nb_frames") or _count_frames(path)),
        fps=fps,
        duration=duration,
        has_audio=audio is not None,
        audio_duration=float(audio.get("duration") or 0.0) if audio else 0.0,
        rotation=_rotation(video),
    )


def frame_md5s(path: Path) -> list[str]:
    """The md5 of every decoded video frame, in order (``ffmpeg -f framemd5``)."""
    done = subprocess.run(
        [_tool("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    digests = [line.rsplit(",", 1)[1].strip() for line in done.stdout.splitlines() if line and not line.startswith("#")]
    assert digests, f"no frames decoded from {path}"
    return digests


def decoded_frames(path: Path, *, autorotate: bool = True) -> list[np.ndarray]:
    """Every frame of ``path`` as BGR arrays (upright when ``autorotate``)."""
    facts = probe_facts(path)
    width, height = facts.width, facts.height
    if autorotate and facts.rotation in (90, 270):
        width, height = height, width
    cmd = [_tool("ffmpeg"), "-nostdin", "-v", "error"]
    if not autorotate:
        cmd.append("-noautorotate")
    cmd += ["-i", str(path), "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
    done = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, check=True)
    frame_bytes = width * height * 3
    assert len(done.stdout) % frame_bytes == 0, "decoded size is not a whole number of frames"
    data = np.frombuffer(done.stdout, dtype=np.uint8)
    return list(data.reshape(-1, height, width, 3))
