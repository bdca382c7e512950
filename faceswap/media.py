"""Reading images and probing media with ffprobe, within the 8K limit.

ffmpeg and ffprobe come from the system (Debian's ``ffmpeg`` package; the
worker images install it the same way); ``FUSIONPLANE_FFMPEG`` and
``FUSIONPLANE_FFPROBE`` point elsewhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from faceswap.config import WorkerSettings
from faceswap.containers import (
    SEGMENT_DEMUXER,
    VIDEO_DEMUXERS,
    describe_demuxer,
    input_args,
    kind_in_words,
    refused_demuxer,
    sniff,
)
from faceswap.errors import BadInput, FrameTooLarge, UnsupportedMedia
from faceswap.types import BGRImage

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "MAX_SIDE",
    "VIDEO_OUTPUT_SUFFIXES",
    "VIDEO_SUFFIXES",
    "MediaInfo",
    "check_frame_size",
    "ffmpeg_binary",
    "ffmpeg_first_error",
    "media_kind",
    "probe",
    "read_image",
    "write_image",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".m4v", ".avi")
#: containers the output encoders (H.264, HEVC) can be written to
VIDEO_OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")
MAX_SIDE = 8192
MAX_PIXELS = 8192 * 4320  # DCI 8K
PROBE_TIMEOUT_S = 30


def ffmpeg_binary(name: str = "ffmpeg") -> str:
    """Path of ffmpeg or ffprobe; a clear error when neither is installed."""
    configured = WorkerSettings.from_env().ffmpeg_binary(name)
    found = configured or shutil.which(name)
    if not found:
        raise UnsupportedMedia(
            f"{name} is not installed; install Debian's ffmpeg package or set FUSIONPLANE_{name.upper()}",
            field="ffmpeg",
        )
    return found


#: ffmpeg's "[h264_nvenc @ 0x55fc90b014c0] " prefix: the address differs on every run
_LOG_CONTEXT = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")


def ffmpeg_first_error(stderr: str, returncode: int) -> str:
    """The first line ffmpeg wrote to stderr, without its per-run context, at most 200 characters.

    The first error names the cause ("Cannot load libcuda.so.1"); the last
    is ffmpeg's generic summary.
    """
    lines = [_LOG_CONTEXT.sub("", line).strip() for line in stderr.splitlines() if line.strip()]
    return (lines[0] if lines else f"exit status {returncode}")[:200]


@dataclass(frozen=True)
class MediaInfo:
    width: int
    height: int
    codec: str
    is_video: bool
    fps: Fraction = Fraction(0)
    frames: int = 0
    duration: float = 0.0
    #: degrees to rotate the coded picture clockwise for display (0, 90, 180, 270)
    rotation: int = 0
    has_audio: bool = False
    audio_codec: str = ""
    #: the ffmpeg demuxer the probe found and allowed; decoding forces it (``-f``)
    demuxer: str = ""

    @property
    def display_size(self) -> tuple[int, int]:
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height


def check_frame_size(width: int, height: int, *, field: str) -> None:
    if width <= 0 or height <= 0:
        raise UnsupportedMedia(f"has no picture (size {width}x{height})", field=field)
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise FrameTooLarge(f"frames of {width}x{height} are above the 8K limit (8192x4320)", field=field)


def media_kind(path: Path, *, field: str = "path") -> str:
    """``image`` or ``video`` by file suffix."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise UnsupportedMedia(
        f"unsupported file type {suffix or '(none)'}; images: {', '.join(IMAGE_SUFFIXES)}; "
        f"videos: {', '.join(VIDEO_SUFFIXES)}",
        field=field,
    )


def _rotation(stream: dict[str, object]) -> int:
    angle = 0.0
    sides = stream.get("side_data_list") or []
    for side in sides if isinstance(sides, list) else []:
        if isinstance(side, dict) and "rotation" in side:
            angle = -float(side["rotation"])  # display matrix angle is counter-clockwise
    tags = stream.get("tags") or {}
    if not angle and isinstance(tags, dict) and "rotate" in tags:
        angle = float(tags["rotate"])
    return round(angle) % 360


def _run_probe(path: Path, *, field: str, wanted: str, demuxers: tuple[str, ...], forced: str | None) -> Any:
    """ffprobe's JSON for ``path``, opened as a local file with an allowed demuxer only (faceswap.containers)."""
    cmd = [
        ffmpeg_binary("ffprobe"),
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_streams",
        "-show_format",
        *input_args(path, demuxers=demuxers, forced=forced),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise UnsupportedMedia(f"{path.name}: probing took over {PROBE_TIMEOUT_S}s", field=field) from exc
    if done.returncode != 0:
        refused = refused_demuxer(done.stderr)
        if refused is not None:
            raise UnsupportedMedia(f"{path.name}: {describe_demuxer(refused)} is not {wanted}", field=field)
        reason = (done.stderr.strip().splitlines() or ["unreadable"])[-1]
        raise UnsupportedMedia(f"{path.name} is not readable media: {reason}", field=field)
    return json.loads(done.stdout or "{}")


def probe(path: Path, *, field: str, segments: bool = False) -> MediaInfo:
    """Size, codec, frame rate, frame count, rotation and audio of a media file.

    Playlists, manifests and text are refused by content, and the container
    must be an allowed one (mp4/mov, mkv/webm, avi; PNG, JPEG, WebP; MPEG-TS
    only with ``segments``, the pipeline's own files): ffmpeg never gets to
    follow what a file names. ``MediaInfo.demuxer`` is what to force when
    decoding it.
    """
    if path.stat().st_size == 0:
        raise UnsupportedMedia(f"{path.name} is empty (0 bytes)", field=field)
    suffix = path.suffix.lower()
    # the suffix only words the refusal ("an HLS playlist is not a video"); the content decides
    kind = "video" if suffix in VIDEO_SUFFIXES else "image" if suffix in IMAGE_SUFFIXES else "media"
    wanted = kind_in_words(kind)
    forced = sniff(path, field=field, wanted=kind)
    if path.suffix:
        media_kind(path, field=field)  # not a type this service takes (.gif), whatever the content
    if forced is not None:
        demuxers: tuple[str, ...] = (forced,)
    else:
        demuxers = (*VIDEO_DEMUXERS, SEGMENT_DEMUXER) if segments else VIDEO_DEMUXERS
    data = _run_probe(path, field=field, wanted=wanted, demuxers=demuxers, forced=forced)
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if video is None:
        raise UnsupportedMedia(f"{path.name} has no picture stream", field=field)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    width, height = int(video.get("width", 0)), int(video.get("height", 0))
    check_frame_size(width, height, field=field)
    format_name = str(data.get("format", {}).get("format_name", ""))
    demuxer = forced or format_name.split(",", 1)[0]
    if demuxer not in demuxers:  # the allow-list held already; this keeps -f honest if ffprobe ever says otherwise
        raise UnsupportedMedia(f"{path.name}: {describe_demuxer(format_name)} is not {wanted}", field=field)
    is_video = forced is None
    fps = Fraction(0)
    for key in ("avg_frame_rate", "r_frame_rate"):
        try:
            fps = Fraction(str(video.get(key, "0/0")))
        except (ValueError, ZeroDivisionError):
            continue
        if fps > 0:
            break
    duration = float(video.get("duration") or data.get("format", {}).get("duration") or 0.0)
    frames = int(video.get("nb_frames") or 0)
    if is_video and frames == 0 and fps > 0:
        frames = round(duration * float(fps))
    if is_video and (fps <= 0 or fps > 1000):
        raise UnsupportedMedia(f"{path.name} has no usable frame rate ({fps})", field=field)
    return MediaInfo(
        width=width,
        height=height,
        codec=str(video.get("codec_name", "unknown")),
        is_video=is_video,
        fps=fps,
        frames=frames,
        duration=duration,
        rotation=_rotation(video),
        has_audio=audio is not None,
        audio_codec=str(audio.get("codec_name", "")) if audio else "",
        demuxer=demuxer,
    )


def read_image(path: Path, *, field: str) -> tuple[BGRImage, npt.NDArray[np.uint8] | None]:
    """BGR pixels and the alpha channel (if any) of a jpg, png or webp; grey becomes BGR."""
    info = probe(path, field=field)
    if info.is_video:
        raise UnsupportedMedia(f"{path.name} is a video, expected an image", field=field)
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UnsupportedMedia(f"{path.name} could not be decoded as an image", field=field)
    if image.dtype != np.uint8:  # 16-bit PNG: the pipeline works in 8 bits
        image = (image / 257.0 + 0.5).astype(np.uint8)
    alpha: npt.NDArray[np.uint8] | None = None
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        alpha = np.ascontiguousarray(image[:, :, 3])
        image = np.ascontiguousarray(image[:, :, :3])
    elif image.shape[2] == 2:  # grey + alpha
        alpha = np.ascontiguousarray(image[:, :, 1])
        image = cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
    check_frame_size(image.shape[1], image.shape[0], field=field)
    return np.asarray(image, dtype=np.uint8), alpha


def write_image(path: Path, image: BGRImage, alpha: npt.NDArray[np.uint8] | None, *, suffix: str, quality: int) -> None:
    """Encode to ``suffix``'s format; alpha is kept where the format has it (png, webp)."""
    if suffix not in IMAGE_SUFFIXES:
        raise BadInput(f"cannot write an image as {suffix or '(no suffix)'}", field="output")
    pixels = image
    if alpha is not None and suffix in (".png", ".webp"):
        pixels = np.dstack([image, alpha])
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, encoded = cv2.imencode(suffix, pixels, params)
    if not ok:
        raise BadInput(f"could not encode the output as {suffix}", field="output")
    path.write_bytes(encoded.tobytes())
