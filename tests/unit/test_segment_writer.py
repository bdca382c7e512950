"""The segment writer closes and commits a finished segment while the next one encodes (issue 19 item 4).

Closing an encoder waits for x264 to drain its lookahead, and a commit may
upload to S3 or Blob: with both on the writer's own thread, every segment
boundary stalled the frames behind it. The writer now hands a finished
segment to one committer thread and starts the next at once; commits stay in
segment order, a failed commit stops the job, and on abort whole segments are
still committed while the unfinished one is dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceswap.checkpoint import Manifest
from faceswap.errors import TemporaryFailure
from faceswap.media import MediaInfo
from faceswap.segments import Encoding, SegmentWriter

pytestmark = pytest.mark.slow

WIDTH, HEIGHT, PER_SEGMENT = 64, 48, 3


class GatedStore:
    """A checkpoint store whose commit of one segment waits for the test to open its gate."""

    uri = "memory://test"

    def __init__(self, *, gate_segment: str | None = None, fail_segment: str | None = None) -> None:
        self.gate = threading.Event()
        self.waiting = threading.Event()
        self.gate_segment, self.fail_segment = gate_segment, fail_segment
        self.put: list[str] = []
        self.manifests: list[list[int]] = []

    def put_segment(self, name: str, local: Path) -> None:
        if name == self.gate_segment:
            self.waiting.set()
            assert self.gate.wait(30), "the test never opened the gate"
        if name == self.fail_segment:
            raise TemporaryFailure(f"cannot write {name}", field="checkpoint")
        assert local.stat().st_size > 0
        self.put.append(name)

    def write_manifest(self, manifest: Manifest) -> None:
        self.manifests.append(sorted(manifest.segments))

    def read_manifest(self) -> Manifest | None:
        return None

    def get_segment(self, name: str, dest: Path) -> None:
        raise AssertionError("not read back here")


def _writer(store: GatedStore, workdir: Path, events: list[tuple[str, dict[str, Any]]]) -> SegmentWriter:
    info = MediaInfo(width=WIDTH, height=HEIGHT, codec="h264", is_video=True, fps=Fraction(24), frames=12)
    writer = SegmentWriter(
        store=store,  # type: ignore[arg-type]
        manifest=Manifest(fingerprint={}, segment_frames=PER_SEGMENT),
        workdir=workdir,
        info=info,
        encoding=Encoding(encoder="libx264", quality=23, preset="veryfast"),
        emit=lambda event, fields: events.append((event, fields)),
        stage_s={"encode": 0.0},
    )
    writer.start()
    return writer


def _frame(i: int) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), (i * 20) % 256, dtype=np.uint8)


def _until(done: Callable[[], bool], within_s: float = 20.0) -> None:
    # a state of another thread with no event of its own to wait on: look until it holds
    deadline = time.monotonic() + within_s
    while not done():
        assert time.monotonic() < deadline, "the writer never got there"
        time.sleep(0.01)


def test_the_next_segment_encodes_while_the_last_one_is_committed(tmp_path: Path) -> None:
    store = GatedStore(gate_segment="segment-000000.ts")
    events: list[tuple[str, dict[str, Any]]] = []
    writer = _writer(store, tmp_path, events)
    for i in range(PER_SEGMENT * 2):
        writer.submit(i // PER_SEGMENT, _frame(i))
    assert store.waiting.wait(20), "segment 0 was never handed to the committer"
    # segment 0's commit is held; segment 1's frames still reach its own encoder
    _until(lambda: writer._encoder is not None and writer._encoder.frames == PER_SEGMENT)
    assert store.put == []
    assert writer._segment == 1
    store.gate.set()
    writer.finish(abort=False)
    assert store.put == ["segment-000000.ts", "segment-000001.ts"]
    assert store.manifests == [[0], [0, 1]]
    assert [fields["segment"] for event, fields in events if event == "segment_committed"] == [0, 1]
    assert writer.committed == 2


def test_commits_stay_in_segment_order(tmp_path: Path) -> None:
    store = GatedStore()
    events: list[tuple[str, dict[str, Any]]] = []
    writer = _writer(store, tmp_path, events)
    for i in range(PER_SEGMENT * 4 - 1):  # the last segment is short
        writer.submit(i // PER_SEGMENT, _frame(i))
    writer.finish(abort=False)
    assert store.put == [f"segment-{n:06d}.ts" for n in range(4)]
    assert [len(m) for m in store.manifests] == [1, 2, 3, 4]
    frames = [fields["frames"] for event, fields in events if event == "segment_committed"]
    assert frames == [3, 3, 3, 2]


def test_a_failed_commit_stops_the_job_and_nothing_after_it_is_committed(tmp_path: Path) -> None:
    store = GatedStore(fail_segment="segment-000001.ts")
    writer = _writer(store, tmp_path, [])

    def feed_then_finish() -> None:
        # the failure surfaces in a later submit() or in finish(), whichever comes first
        for i in range(PER_SEGMENT * 6):
            writer.submit(i // PER_SEGMENT, _frame(i))
        writer.finish(abort=False)

    with pytest.raises(TemporaryFailure):
        feed_then_finish()
    writer.finish(abort=True)
    assert store.put == ["segment-000000.ts"]
    assert all(len(m) == 1 for m in store.manifests)


def test_on_abort_whole_segments_are_committed_and_the_unfinished_one_is_dropped(tmp_path: Path) -> None:
    store = GatedStore(gate_segment="segment-000000.ts")
    writer = _writer(store, tmp_path, [])
    for i in range(PER_SEGMENT + 1):  # segment 0 whole, segment 1 begun
        writer.submit(i // PER_SEGMENT, _frame(i))
    assert store.waiting.wait(20)
    store.gate.set()
    writer.finish(abort=True)
    assert store.put == ["segment-000000.ts"]
    assert not (tmp_path / "segment-000001.ts").exists()
