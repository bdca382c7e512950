"""Synthetic sample media: a panning, zooming clip made from one photo, with a tone.

Used by ``fusionctl demo``, the benchmark and the tests, so all three exercise
the same kind of input: one face that moves a little in every frame, and an
audio track to carry through.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from faceswap.errors import BadInput
from faceswap.media import ffmpeg_binary
from faceswap.types import BGRImage

__all__ = ["pan_zoom_frames", "write_clip"]

ENCODE_TIMEOUT_S = 600


def pan_zoom_frames(
    image: BGRImage, *, frames: int, size: tuple[int, int], centre: tuple[float, float] = (0.43, 0.29)
) -> Iterator[BGRImage]:
    """``frames`` frames of ``size`` (w, h) panning and zooming around ``centre``.

    ``centre`` is a point of the photo as fractions of its width and height
    (the default is the astronaut's face). The view starts about 300 photo
    pixels high, zooms in by 15% and pans 30 photo pixels left to right.
    """
    width, height = size
    img_h, img_w = image.shape[:2]
    centre_x, centre_y = centre[0] * img_w, centre[1] * img_h
    for i in range(frames):
        t = i / max(frames - 1, 1)
        zoom = (height / 300.0) * (1.0 + 0.15 * t)
        cx, cy = centre_x - 15 + 30 * t, centre_y + 10
        matrix = np.array([[zoom, 0, width / 2 - zoom * cx], [0, zoom, height / 2 - zoom * cy]], dtype=np.float32)
        yield np.asarray(
            cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT),
            dtype=np.uint8,
        )


def write_clip(
    frames: Iterable[BGRImage],
    path: Path,
    *,
    size: tuple[int, int],
    fps: int,
    duration_s: float,
    tone_hz: float | None = 440.0,
    gop: int | None = None,
) -> Path:
    """Encode BGR frames as H.264 (and a sine tone as AAC unless ``tone_hz`` is None) into ``path``."""
    width, height = size
    cmd = [
        ffmpeg_binary(), "-nostdin", "-v", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-framerate", str(fps), "-i", "-",
    ]  # fmt: skip
    if tone_hz is not None:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate=48000:duration={duration_s}"]
        cmd += ["-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "96k"]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]
    cmd += ["-g", str(gop or fps), str(path)]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        assert proc.stderr is not None
        try:
            for frame in frames:
                proc.stdin.write(np.ascontiguousarray(frame).tobytes())
            proc.stdin.close()
            error = proc.stderr.read().decode("utf-8", "replace").strip()
            proc.wait(timeout=ENCODE_TIMEOUT_S)
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0:
        raise BadInput(f"ffmpeg could not write {path.name}: {error}", field="output")
    return path
