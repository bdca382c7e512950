"""Stopping and resuming beyond the happy path: a stop during work that cannot be
interrupted, and a checkpoint whose committed segment was damaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from faceswap import SwapOptions, run_swap
from tests.conftest import REPO
from tests.support.media import frame_md5s, make_clip
from tests.support.no_metadata import subprocess_env

pytestmark = pytest.mark.slow

# Runs ``fusionctl swap`` with model loading slowed to 30 s: a stand-in for a
# TensorRT engine build, which cannot be interrupted part-way.
SLOW_LOAD = """
import sys, time
import faceswap.pipeline as pipeline
original = pipeline.FaceSwapper.__init__
def slow(self, *args, **kwargs):
    original(self, *args, **kwargs)
    print("models-loaded", flush=True)
    time.sleep(30)
pipeline.FaceSwapper.__init__ = slow
from controlplane.cli.main import cli
cli(sys.argv[1:], prog_name="fusionctl")
"""


def test_sigterm_during_uninterruptible_work_exits_75_within_the_grace_period(
    tmp_path: Path, source_face_path: Path, astronaut_path: Path
) -> None:
    output = tmp_path / "out.png"
    env = subprocess_env(FUSIONPLANE_STOP_GRACE_S="1.5")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SLOW_LOAD,
            "swap",
            "--source",
            str(source_face_path),
            "--target",
            str(astronaut_path),
            "--output",
            str(output),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "models-loaded"
        proc.terminate()
        started = time.monotonic()
        proc.wait(timeout=15)
        waited = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == 75
    assert 1.0 <= waited < 10.0, f"stopped after {waited:.1f}s"
    assert not output.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_a_damaged_committed_segment_is_redone_not_trusted(
    tmp_path: Path, source_face_path: Path, astronaut: np.ndarray
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", astronaut, frames=30, fps=15)
    options = SwapOptions(segment_frames=10)
    checkpoint = tmp_path / "ckpt"
    first = run_swap(
        source=str(source_face_path),
        target=str(clip),
        output=str(tmp_path / "a.mp4"),
        options=options,
        checkpoint=str(checkpoint),
    )
    assert first.segments_done == 3
    damaged = checkpoint / "segment-000001.ts"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    (checkpoint / "segment-000002.ts").unlink()
    events: list[tuple[str, dict[str, object]]] = []
    second = run_swap(
        source=str(source_face_path),
        target=str(clip),
        output=str(tmp_path / "b.mp4"),
        options=options,
        checkpoint=str(checkpoint),
        on_event=lambda e, f: events.append((e, f)),
    )
    invalid = sorted(int(str(f["segment"])) for e, f in events if e == "segment_invalid")
    assert invalid == [1, 2]
    assert second.segments_skipped == 1
    assert second.segments_done == 2
    assert second.frames_swapped == 20
    assert frame_md5s(tmp_path / "b.mp4") == frame_md5s(tmp_path / "a.mp4")
    manifest = json.loads((checkpoint / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(manifest["segments"]) == ["0", "1", "2"]


def test_webm_output_is_refused_before_any_work(tmp_path: Path, source_face_path: Path, astronaut: np.ndarray) -> None:
    from faceswap import BadInput

    clip = make_clip(tmp_path / "clip.mp4", astronaut, frames=4, fps=15)
    events: list[str] = []
    with pytest.raises(BadInput, match=r"\.mp4") as info:
        run_swap(
            source=str(source_face_path),
            target=str(clip),
            output=str(tmp_path / "out.webm"),
            on_event=lambda e, _f: events.append(e),
        )
    assert info.value.field == "output"
    assert events == []  # refused before the source was even read
    assert list(tmp_path.iterdir()) == [clip]


def test_published_outputs_follow_the_umask_not_mkstemp(
    tmp_path: Path, source_face_path: Path, astronaut_path: Path
) -> None:
    output = tmp_path / "shared" / "out.png"
    run_swap(source=str(source_face_path), target=str(astronaut_path), output=str(output))
    mask = os.umask(0)
    os.umask(mask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~mask
