"""Frames in and out of ffmpeg through pipes: no temporary frame files.

The decoder streams raw BGR frames on stdout; each segment's encoder reads
raw frames on stdin and writes one encoded segment file. Finished segments
are MPEG-TS files (their 90 kHz timestamps survive the concat demuxer; mp4
segments come out re-timed because of their B-frame edit lists) joined with
stream copy, and the input's audio is muxed back. x264 is deterministic for the same frames and settings, so a
segment encoded after a resume is bit-identical to the one an uninterrupted
run would have produced. Both pipes are enlarged and frames are read into a
ring of reused buffers (faceswap/pipes.py): at 1080p the default 64 KiB pipes,
not ffmpeg, set the pace.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from faceswap.containers import SEGMENT_DEMUXER, VIDEO_DEMUXERS, input_args
from faceswap.decoders import decoder_input_args
from faceswap.encoders import ENCODERS, available_encoders, encoder_args
from faceswap.errors import BadInput, ExecutionProviderUnavailable, FaceSwapError, UnsupportedMedia
from faceswap.media import MediaInfo, ffmpeg_binary, probe
from faceswap.pipes import FrameRing, enlarge_pipe, pipe_size, read_frame, write_all
from faceswap.types import BGRImage

__all__ = [
    "ENCODERS",
    "Decoder",
    "SegmentEncoder",
    "available_encoders",
    "concat_segments",
    "to_coded",
    "to_display",
]

#: audio codecs an mp4/mov container can carry as they are
_MP4_AUDIO = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}
#: the names the pipeline gives its checkpoint segments (segments.segment_name)
_SEGMENT_FILE = re.compile(r"^segment-[0-9]{6}\.ts$")
_ROTATE_UPRIGHT = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
_ROTATE_BACK = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


def to_display(frame: BGRImage, rotation: int) -> BGRImage:
    """Coded frame -> upright frame, so faces are detected the right way up."""
    return np.asarray(cv2.rotate(frame, _ROTATE_UPRIGHT[rotation]), dtype=np.uint8) if rotation else frame


def to_coded(frame: BGRImage, rotation: int) -> BGRImage:
    """Upright frame -> coded orientation, so the output keeps the input's rotation tag."""
    return np.asarray(cv2.rotate(frame, _ROTATE_BACK[rotation]), dtype=np.uint8) if rotation else frame


class _StderrTail:
    """Keeps the last lines ffmpeg wrote to stderr, for the error message."""

    def __init__(self, stream: object) -> None:
        self.lines: deque[str] = deque(maxlen=20)
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: object) -> None:
        try:
            for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
                self.lines.append(raw.decode("utf-8", "replace").rstrip())
        except (OSError, ValueError):  # closed under us by close()
            return

    def text(self) -> str:
        self._thread.join(timeout=2)
        return self.lines[-1] if self.lines else "no message"

    def close(self, stream: object) -> None:
        """Once the process has exited: read what is left, then close the pipe (no fd leak)."""
        self._thread.join(timeout=2)
        stream.close()  # type: ignore[attr-defined]


class Decoder:
    """Iterates the frames of a video in coded orientation, as BGR arrays.

    ``ring`` > 0 reads the frames into that many reused buffers (see
    :class:`~faceswap.pipes.FrameRing` for how long a frame then stays
    intact); 0 gives every frame a buffer of its own. ``big_pipe`` False keeps
    the kernel's default pipe size (the benchmark's baseline). ``decoder``
    ``nvdec`` decodes on the GPU (:mod:`faceswap.decoders`), ``cpu`` in ffmpeg's
    own decoders.
    """

    def __init__(
        self, path: Path, info: MediaInfo, *, ring: int = 0, big_pipe: bool = True, decoder: str = "cpu"
    ) -> None:
        if info.demuxer not in VIDEO_DEMUXERS:
            raise UnsupportedMedia(f"{path.name} was not probed as a video container", field="target")
        self.info = info
        self.frame_bytes = info.width * info.height * 3
        self._ring = FrameRing(self.frame_bytes, ring)
        cmd = [
            ffmpeg_binary(),
            "-nostdin",
            "-v",
            "error",
            "-xerror",
            "-noautorotate",
            *decoder_input_args(decoder),
            # the demuxer the probe allowed, forced: content cannot pick a playlist or pattern now
            *input_args(path, demuxers=(info.demuxer,), forced=info.demuxer),
            "-map",
            "0:v:0",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-fps_mode",
            "passthrough",
            "-",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        self.pipe_bytes = enlarge_pipe(fd, 2 * self.frame_bytes) if big_pipe else pipe_size(fd)
        self._stderr = _StderrTail(self.proc.stderr)

    def __iter__(self) -> Iterator[BGRImage]:
        stdout = self.proc.stdout
        assert isinstance(stdout, io.RawIOBase)  # bufsize=0 gives an unbuffered FileIO
        shape = (self.info.height, self.info.width, 3)
        while True:
            buffer = self._ring.take()
            got = read_frame(stdout, buffer)
            if got == 0:
                break
            if got < self.frame_bytes:
                raise UnsupportedMedia("the video ends inside a frame (truncated)", field="target")
            yield buffer.reshape(shape)
        if self.proc.wait() != 0:
            raise UnsupportedMedia(f"the video is corrupt or truncated: {self._stderr.text()}", field="target")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close(self.proc.stderr)


class SegmentEncoder:
    """One ffmpeg process that turns raw frames into one encoded segment file."""

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: Fraction,
        encoder: str,
        quality: int,
        preset: str,
        big_pipe: bool = True,
    ) -> None:
        self.path = path
        # 4:2:0 needs even sizes; odd ones keep their exact size in 4:4:4
        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        cmd = [
            ffmpeg_binary(),
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-protocol_whitelist",
            "pipe",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-s",
            f"{width}x{height}",
            "-framerate",
            f"{fps.numerator}/{fps.denominator}",
            "-i",
            "pipe:0",
            "-an",
            *encoder_args(encoder, quality, preset),
            "-pix_fmt",
            pix_fmt,
            "-f",
            "mpegts",
            str(path),
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        assert self.proc.stdin is not None
        fd = self.proc.stdin.fileno()
        self.pipe_bytes = enlarge_pipe(fd, 2 * width * height * 3) if big_pipe else pipe_size(fd)
        self._stderr = _StderrTail(self.proc.stderr)
        self.frames = 0
        self._encoder = encoder

    def _failure(self, what: str) -> FaceSwapError:
        message = f"{what}: {self._stderr.text()}"
        if self._encoder.endswith("_nvenc"):
            # no NVENC on this node (or no GPU): another target may have one
            return ExecutionProviderUnavailable(message, field="encoder")
        return BadInput(message, field="encoder")

    def write(self, frame: BGRImage) -> None:
        assert self.proc.stdin is not None
        try:
            write_all(self.proc.stdin.fileno(), frame)
        except BrokenPipeError as exc:
            raise self._failure("the encoder stopped") from exc
        self.frames += 1

    def finish(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        failed = self.proc.wait() != 0
        self._stderr.close(self.proc.stderr)
        if failed:
            raise self._failure("encoding failed")

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        self._stderr.close(self.proc.stderr)
        self.path.unlink(missing_ok=True)


def concat_segments(
    segments: list[Path], *, source: Path, info: MediaInfo, output: Path, container: str, workdir: Path
) -> None:
    """Join segments (stream copy), carry the input's audio, and restore its rotation."""
    listing = workdir / "segments.txt"
    for segment in segments:
        # the list is ours: our own names in our own workdir, nothing a user named
        if not _SEGMENT_FILE.match(segment.name) or segment.resolve().parent != workdir.resolve():
            raise BadInput(f"{segment} is not a segment of this job", field="checkpoint")
    listing.write_text("".join(f"file '{p.resolve()}'\n" for p in segments), encoding="utf-8")
    base = [
        ffmpeg_binary(),
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-safe",
        "0",
        # concat of our segments; each segment may only be MPEG-TS (a checkpoint cannot smuggle a playlist in)
        *input_args(listing, demuxers=("concat", SEGMENT_DEMUXER), forced="concat"),
    ]
    maps = ["-map", "0:v:0"]
    if info.has_audio:
        base += input_args(source, demuxers=(info.demuxer,), forced=info.demuxer)
        maps += ["-map", "1:a:0"]
    muxer = {".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}.get(container, "mp4")
    tail = ["-movflags", "+faststart"] if muxer in ("mp4", "mov") else []
    tail += ["-f", muxer, str(output)]
    audio_choices: list[list[str]] = [[]]
    if info.has_audio:
        copy_ok = muxer not in ("mp4", "mov") or info.audio_codec in _MP4_AUDIO
        audio_choices = ([["-c:a", "copy"]] if copy_ok else []) + [["-c:a", "aac", "-b:a", "192k"]]
    # ffmpeg releases disagree on which way a ``rotate`` tag turns when written (5.1 stores
    # rotate=90 as 90 degrees counter-clockwise): write it, read the display matrix back,
    # and write the opposite tag if it came out the wrong way round.
    rotate_tags = list(dict.fromkeys([info.rotation, (360 - info.rotation) % 360])) if info.rotation else [0]
    last_error = ""
    for tag in rotate_tags:
        rotate = ["-metadata:s:v:0", f"rotate={tag}"] if tag else []
        for audio in audio_choices:
            done = subprocess.run(
                [*base, *maps, "-c:v", "copy", *audio, *rotate, *tail],
                capture_output=True,
                text=True,
                timeout=3600,
                check=False,
            )
            if done.returncode == 0:
                break
            last_error = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        else:
            raise BadInput(f"could not assemble the output video: {last_error}", field="output")
        if not info.rotation or probe(output, field="output").rotation == info.rotation:
            return
    raise BadInput(f"this ffmpeg could not tag the output as rotated {info.rotation} degrees", field="output")
