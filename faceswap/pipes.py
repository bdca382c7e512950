"""Raw frames through pipes, fast: bigger pipe buffers, reused frame buffers, whole writes.

A Linux pipe holds 64 KiB by default, so one 1080p BGR frame (6.2 MB) costs
about a hundred reads or writes and as many wake-ups of ffmpeg or Python;
:func:`enlarge_pipe` grows it to ``/proc/sys/fs/pipe-max-size`` (1 MiB by
default), silently keeping the old size where the kernel refuses.
:class:`FrameRing` hands out preallocated frame buffers in turn, so decoding
allocates (and page-faults) nothing per frame.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from faceswap.types import BGRImage

__all__ = ["FrameRing", "enlarge_pipe", "pipe_max_size", "pipe_size", "read_frame", "write_all"]

#: the kernel's default pipe size, assumed where it cannot be asked
DEFAULT_PIPE_BYTES = 64 << 10
# Linux values; the fcntl module names them from Python 3.10 on Linux only
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


@cache
def pipe_max_size() -> int:
    """The largest pipe an unprivileged process may ask for (``/proc/sys/fs/pipe-max-size``)."""
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/fs/pipe-max-size").read_text(encoding="ascii").strip())
    return DEFAULT_PIPE_BYTES


def pipe_size(fd: int) -> int:
    """The pipe's buffer size in bytes; 0 where the platform cannot say."""
    try:
        return int(fcntl.fcntl(fd, _F_GETPIPE_SZ))
    except OSError:
        return 0


def enlarge_pipe(fd: int, want: int) -> int:
    """Grow the pipe behind ``fd`` towards ``want`` bytes (at most pipe-max-size); returns the size it has.

    Refusals (EPERM past the user's pipe quota, EINVAL or EBADF where ``fd``
    is no pipe, an OS without the call) leave the pipe as it was: bigger pipes
    are only faster, never needed.
    """
    target = max(min(want, pipe_max_size()), DEFAULT_PIPE_BYTES)
    with contextlib.suppress(OSError):
        return int(fcntl.fcntl(fd, _F_SETPIPE_SZ, target))
    return pipe_size(fd)


def read_frame(stream: io.RawIOBase, buffer: npt.NDArray[np.uint8]) -> int:
    """Fill ``buffer`` from ``stream`` straight into its memory; returns the bytes read (fewer only at the end)."""
    view = memoryview(buffer.data)
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def write_all(fd: int, frame: BGRImage) -> None:
    """Write the frame's bytes to ``fd`` without copying them (a write may take only part: loop)."""
    view = np.ascontiguousarray(frame).data.cast("B")
    while view:
        view = view[os.write(fd, view) :]


class FrameRing:
    """``size`` preallocated frame buffers, handed out in turn.

    The invariant callers rely on: the buffer behind a frame is handed out
    (and overwritten) again only after ``size - 1`` further frames have been
    handed out. A consumer that never holds more than ``size - 1`` frames at
    once (counting every queue between the stages) therefore always sees
    intact frames; ``segments.decoder_ring`` sizes the ring for the pipeline.
    ``size`` 0 allocates a fresh buffer for every frame, for callers that keep
    frames for as long as they like.
    """

    def __init__(self, frame_bytes: int, size: int) -> None:
        if size < 0:
            raise ValueError("a ring holds 0 (fresh buffers) or more frames")
        self.frame_bytes = frame_bytes
        self.size = size
        # np.empty: large blocks come from mmap, so pages are touched when first read into, not here
        self._buffers = [np.empty(frame_bytes, dtype=np.uint8) for _ in range(size)]
        self._next = 0

    def take(self) -> npt.NDArray[np.uint8]:
        """The buffer for the next frame (flat bytes)."""
        if not self.size:
            return np.empty(self.frame_bytes, dtype=np.uint8)
        buffer = self._buffers[self._next]
        self._next = (self._next + 1) % self.size
        return buffer
