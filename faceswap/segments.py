"""Video work beside the swapping thread: frames decoded ahead, swapped frames encoded into segments.

Each segment is a file of ``segment_frames`` frames; :class:`SegmentWriter`
commits it to the checkpoint store (file, then manifest) as soon as it is
complete, so a preempted worker resumes after the last committed segment.
Both queues are bounded in bytes (:data:`QUEUE_BYTES`), whatever the resolution.

Decoded frames live in the decoder's ring of reused buffers
(:func:`decoder_ring`); it is sized so that no buffer comes round again while
a stage still holds its frame. The bound: every frame alive is in the
read-ahead queue, the writer's inbox, or in one stage's hands (the swapping
thread's frame, the one the writer is piping to ffmpeg, the one being read),
and both queues are bounded, so the decoder cannot run further ahead.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceswap.checkpoint import CheckpointStore, Manifest
from faceswap.media import MediaInfo
from faceswap.models import sha256_file
from faceswap.types import BGRImage
from faceswap.video import Decoder, SegmentEncoder

__all__ = [
    "FRAMES_IN_HAND",
    "QUEUE_BYTES",
    "Encoding",
    "EventSink",
    "SegmentWriter",
    "decoder_ring",
    "queue_depths",
    "read_ahead",
    "segment_name",
]

#: raw frames buffered between stages, in bytes; at 8K (100 MB a frame) that is two frames each
QUEUE_BYTES = 256 << 20
#: frames held outside the queues: the swapping thread's, the writer's, and the one being decoded
FRAMES_IN_HAND = 3
#: at most this many frames wait in the read-ahead queue and in the writer's inbox
_READ_AHEAD_MOST, _INBOX_MOST = 4, 8
#: where the pipeline reports what it did: (event name, fields)
EventSink = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Encoding:
    """How segments are encoded: the job's encoder, quality and preset."""

    encoder: str
    quality: int
    preset: str


def segment_name(index: int) -> str:
    """The file name of segment ``index`` (video.py accepts only these names from a manifest)."""
    return f"segment-{index:06d}.ts"


def _queue_depth(frame_bytes: int, most: int) -> int:
    return max(2, min(most, QUEUE_BYTES // max(frame_bytes, 1)))


def queue_depths(frame_bytes: int) -> tuple[int, int]:
    """(read-ahead queue, writer inbox) depths in frames for frames of ``frame_bytes``."""
    return _queue_depth(frame_bytes, _READ_AHEAD_MOST), _queue_depth(frame_bytes, _INBOX_MOST)


def decoder_ring(frame_bytes: int, *, held: int = 1) -> int:
    """How many reused buffers the pipeline's decoder needs: more than frames can be alive at once.

    ``held`` is how many frames the swapping thread holds at once (a detection batch).
    """
    return sum(queue_depths(frame_bytes)) + FRAMES_IN_HAND + max(held, 1) - 1


def read_ahead(decoder: Decoder, stage_s: dict[str, float], stop: threading.Event) -> Iterator[BGRImage]:
    """Frames read ahead on a thread, so decoding overlaps swapping."""
    ready: queue.Queue[BGRImage | BaseException | None] = queue.Queue(maxsize=queue_depths(decoder.frame_bytes)[0])

    def pump() -> None:
        try:
            for frame in decoder:
                while not stop.is_set():
                    try:
                        ready.put(frame, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(None)
        except BaseException as exc:
            ready.put(exc)

    reader = threading.Thread(target=pump, name="decoder", daemon=True)
    reader.start()
    while True:
        start = time.perf_counter()
        item = ready.get()
        stage_s["decode"] += time.perf_counter() - start
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


class SegmentWriter(threading.Thread):
    """Encodes frames into segment files and commits each finished segment."""

    def __init__(
        self,
        *,
        store: CheckpointStore,
        manifest: Manifest,
        workdir: Path,
        info: MediaInfo,
        encoding: Encoding,
        emit: EventSink,
        stage_s: dict[str, float],
    ) -> None:
        super().__init__(name="segment-writer", daemon=True)
        self.store, self.manifest, self.workdir, self.info = store, manifest, workdir, info
        self.encoding, self.emit, self.stage_s = encoding, emit, stage_s
        depth = queue_depths(info.width * info.height * 3)[1]
        self.inbox: queue.Queue[tuple[str, int, BGRImage | None]] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.committed = 0
        self._encoder: SegmentEncoder | None = None
        self._segment = -1
        # A finished segment is closed and committed on its own thread while the next one is
        # already encoding: closing an encoder waits for x264 to drain its lookahead, and the
        # commit may upload to S3 or Blob; neither should stall the frames behind it. One
        # segment may wait behind the one being committed (so at most three encoders live),
        # and commits stay in segment order (one thread, a FIFO queue).
        self._finished: queue.Queue[tuple[int, SegmentEncoder] | None] = queue.Queue(maxsize=1)
        self._committer = threading.Thread(target=self._commit_in_order, name="segment-committer", daemon=True)
        self._timing = threading.Lock()  # both threads add to stage_s["encode"]

    def submit(self, segment: int, frame: BGRImage) -> None:
        self._put(("frame", segment, frame))

    def _put(self, item: tuple[str, int, BGRImage | None]) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.inbox.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self, *, abort: bool) -> None:
        """Commit the last segment (or, on ``abort``, drop the unfinished one) and stop."""
        if self.is_alive():
            try:
                self._put(("abort" if abort else "end", -1, None))
            except BaseException:
                if not abort:
                    raise
            self.join()
        if self.error is not None and not abort:
            raise self.error

    def run(self) -> None:
        self._committer.start()
        try:
            self._encode()
        finally:
            # finished segments are committed even on abort: they are whole, and a resumed attempt
            # skips them; only the unfinished one is dropped
            self._hand_over(None)
            self._committer.join()

    def _encode(self) -> None:
        try:
            while True:
                kind, segment, frame = self.inbox.get()
                if kind == "abort":
                    if self._encoder is not None:
                        self._encoder.abort()
                    return
                if kind == "end":
                    self._close_segment()
                    return
                assert frame is not None
                if segment != self._segment:
                    self._close_segment()
                    self._start(segment)
                assert self._encoder is not None
                start = time.perf_counter()
                self._encoder.write(frame)
                self._add_encode_time(start)
                if self.error is not None:  # the committer failed: stop encoding
                    raise self.error
        except BaseException as exc:  # surfaced to the swapping thread by submit()/finish()
            if self.error is None:
                self.error = exc
            if self._encoder is not None:
                self._encoder.abort()

    def _start(self, segment: int) -> None:
        width, height = self.info.width, self.info.height
        self._segment = segment
        self._encoder = SegmentEncoder(
            self.workdir / segment_name(segment),
            width=width,
            height=height,
            fps=self.info.fps,
            encoder=self.encoding.encoder,
            quality=self.encoding.quality,
            preset=self.encoding.preset,
        )

    def _close_segment(self) -> None:
        if self._encoder is None:
            return
        encoder, self._encoder = self._encoder, None
        self._hand_over((self._segment, encoder))

    def _hand_over(self, item: tuple[int, SegmentEncoder] | None) -> None:
        start = time.perf_counter()
        while self._committer.is_alive():
            try:
                self._finished.put(item, timeout=0.2)
                break
            except queue.Full:
                continue
        else:
            if item is not None:  # the committer stopped on an error: this segment is not committed
                item[1].abort()
        self._add_encode_time(start)

    def _add_encode_time(self, start: float) -> None:
        with self._timing:
            self.stage_s["encode"] += time.perf_counter() - start

    def _commit_in_order(self) -> None:
        while True:
            item = self._finished.get()
            if item is None:
                return
            segment, encoder = item
            if self.error is not None:
                encoder.abort()
                continue
            try:
                self._commit(segment, encoder)
            except BaseException as exc:
                self.error = exc
                encoder.abort()

    def _commit(self, segment: int, encoder: SegmentEncoder) -> None:
        start = time.perf_counter()
        encoder.finish()
        self._add_encode_time(start)
        name = segment_name(segment)
        self.store.put_segment(name, encoder.path)
        self.manifest.segments[segment] = {
            "file": name,
            "frames": encoder.frames,
            "sha256": sha256_file(encoder.path),
        }
        self.store.write_manifest(self.manifest)
        self.committed += 1
        self.emit("segment_committed", {"segment": segment, "frames": encoder.frames})
