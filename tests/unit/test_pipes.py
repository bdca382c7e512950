"""Raw frames through pipes: enlarged pipes, the decoder's ring of reused buffers, whole writes."""

from __future__ import annotations

import collections
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceswap import pipes
from faceswap.media import probe
from faceswap.pipes import DEFAULT_PIPE_BYTES, FrameRing, enlarge_pipe, pipe_max_size, pipe_size, write_all
from faceswap.segments import FRAMES_IN_HAND, decoder_ring, queue_depths, read_ahead
from faceswap.video import Decoder, SegmentEncoder
from tests.support.media import make_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """40 distinct frames (the camera pans and zooms), so a frame overwritten by another shows."""
    return make_clip(tmp_path_factory.mktemp("clips") / "pan.mp4", astronaut, frames=40, audio=False)


def _md5(frame: np.ndarray) -> str:
    return hashlib.md5(frame.tobytes()).hexdigest()


def _reference(clip: Path) -> list[str]:
    decoder = Decoder(clip, probe(clip, field="target"))  # ring 0: every frame its own buffer
    try:
        return [_md5(frame) for frame in decoder]
    finally:
        decoder.close()


def test_a_pipe_is_enlarged_up_to_pipe_max_size() -> None:
    read, write = os.pipe()
    try:
        assert pipe_size(write) == DEFAULT_PIPE_BYTES
        got = enlarge_pipe(write, 8 << 20)
        assert got == pipe_size(read) == min(8 << 20, pipe_max_size())
        assert got >= DEFAULT_PIPE_BYTES
    finally:
        os.close(read)
        os.close(write)


def test_a_refused_enlargement_is_silent(tmp_path: Path) -> None:
    with (tmp_path / "not-a-pipe").open("wb") as file:
        assert enlarge_pipe(file.fileno(), 1 << 20) == 0  # EBADF/EINVAL: left as it was, no exception


def test_decoder_and_encoder_pipes_are_enlarged(tmp_path: Path, astronaut: np.ndarray) -> None:
    clip = make_clip(tmp_path / "vga.mp4", astronaut, frames=4, size=(640, 480), audio=False)
    info = probe(clip, field="target")
    want = min(2 * 640 * 480 * 3, pipe_max_size())
    decoder = Decoder(clip, info, ring=2)
    encoder = SegmentEncoder(
        tmp_path / "segment-000000.ts",
        width=640,
        height=480,
        fps=info.fps,
        encoder="libx264",
        quality=18,
        preset="veryfast",
    )
    try:
        assert decoder.pipe_bytes == want > DEFAULT_PIPE_BYTES
        assert encoder.pipe_bytes == want
        for frame in decoder:
            encoder.write(frame)
        encoder.finish()
        assert encoder.frames == 4
    finally:
        decoder.close()
    legacy = Decoder(clip, info, big_pipe=False)
    legacy.close()
    assert legacy.pipe_bytes == DEFAULT_PIPE_BYTES


def test_the_ring_hands_a_buffer_out_again_only_after_all_the_others() -> None:
    ring = FrameRing(16, 3)
    first = [ring.take() for _ in range(3)]
    assert len({id(b) for b in first}) == 3
    again = [ring.take() for _ in range(3)]
    assert all(a is b for a, b in zip(again, first, strict=True))
    fresh = FrameRing(16, 0)
    assert fresh.take() is not fresh.take()


def test_frames_held_by_the_consumer_stay_intact(clip: Path) -> None:
    """A consumer holding ring - 1 frames (every frame it has not released) never sees one overwritten."""
    reference = _reference(clip)
    info = probe(clip, field="target")
    size = 5
    decoder = Decoder(clip, info, ring=size)
    held: collections.deque[tuple[int, np.ndarray]] = collections.deque()
    try:
        for index, frame in enumerate(decoder):
            held.append((index, frame))
            if len(held) == size - 1:
                for kept_index, kept in held:
                    assert _md5(kept) == reference[kept_index], f"frame {kept_index} was overwritten"
                held.popleft()
    finally:
        decoder.close()
    assert index + 1 == len(reference) == 40


def test_a_ring_too_small_for_the_holder_would_be_caught(clip: Path) -> None:
    """The check above can fail: holding as many frames as the ring has buffers overwrites the oldest."""
    reference = _reference(clip)
    decoder = Decoder(clip, probe(clip, field="target"), ring=3)
    try:
        frames = list(decoder)  # holds all 40 while the ring has 3 buffers
    finally:
        decoder.close()
    assert _md5(frames[0]) != reference[0]
    assert _md5(frames[-1]) == reference[-1]


def test_the_pipeline_ring_outlasts_every_queue_and_hand(clip: Path) -> None:
    """read_ahead fills its queue while the swapping thread and the writer hold all they may: frames stay intact.

    The consumer here keeps the writer's whole inbox plus the two frames in hand
    (the swapping thread's and the one being piped to ffmpeg); read_ahead keeps
    its own queue full meanwhile, as it does when the swapping thread is slow.
    """
    reference = _reference(clip)
    info = probe(clip, field="target")
    frame_bytes = info.width * info.height * 3
    ahead, inbox = queue_depths(frame_bytes)
    ring = decoder_ring(frame_bytes)
    assert ring == ahead + inbox + FRAMES_IN_HAND
    held_most = inbox + 2
    decoder = Decoder(clip, info, ring=ring)
    held: collections.deque[tuple[int, np.ndarray]] = collections.deque()
    stage_s: dict[str, Any] = {"decode": 0.0}
    seen = 0
    try:
        for index, frame in enumerate(read_ahead(decoder, stage_s, threading.Event())):
            held.append((index, frame))
            seen += 1
            if len(held) > held_most:
                held.popleft()
            # give the read-ahead thread time to fill its queue while we hold everything
            threading.Event().wait(0.01)
            for kept_index, kept in held:
                assert _md5(kept) == reference[kept_index], f"frame {kept_index} was overwritten"
    finally:
        decoder.close()
    assert seen == len(reference)


def test_write_all_finishes_a_partial_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = np.arange(3 * 50 * 40, dtype=np.uint32).astype(np.uint8).reshape(50, 40, 3)
    real_write = os.write
    calls = []

    def short_write(fd: int, data: Any) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:1000]))

    monkeypatch.setattr(pipes.os, "write", short_write)
    path = tmp_path / "frame.raw"
    with path.open("wb") as file:
        write_all(file.fileno(), frame)
    assert path.read_bytes() == frame.tobytes()
    assert len(calls) == 6  # 6000 bytes, 1000 a call
