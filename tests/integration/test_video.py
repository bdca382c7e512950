"""Video swaps end to end through ffmpeg: timing, audio, rotation, checkpoint resume.

Clips are made from the astronaut photo (tests/support/media.py); facts about
the outputs are read back with ffprobe/ffmpeg, independently of the code
under test.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceswap import SwapOptions, run_swap
from faceswap.decoders import decoder_works
from faceswap.encoders import encoder_works
from faceswap.errors import BadInput
from faceswap.pipeline import FaceSwapper
from tests.support.media import decoded_frames, frame_md5s, make_clip, probe_facts

pytestmark = pytest.mark.slow

RESUME_FRAMES = 120
RESUME_SEGMENT = 10


@pytest.fixture(scope="module")
def clip_15fps(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """36 frames at 15 fps (2.4 s) with a tone: three segments of 15 frames, the last one short."""
    return make_clip(tmp_path_factory.mktemp("clips") / "pan15.mp4", astronaut, frames=36, fps=15)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "pan-long.mp4", astronaut, frames=RESUME_FRAMES, fps=24)


@pytest.fixture
def detector() -> Any:
    return FaceSwapper(SwapOptions()).detector


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _face_change(
    before: list[np.ndarray], after: list[np.ndarray], detector: Any, *, step: int = 6
) -> list[tuple[float, float]]:
    """(mean change inside the face box, mean change elsewhere) for every ``step``-th frame pair."""
    assert len(before) == len(after)
    changes = []
    for original, swapped in list(zip(before, after, strict=True))[::step]:
        assert original.shape == swapped.shape
        faces = detector.detect(original)
        assert len(faces) == 1, "the test clip shows exactly one face in every frame"
        x1, y1, x2, y2 = (round(v) for v in faces[0].box)
        diff = np.abs(original.astype(np.int16) - swapped.astype(np.int16)).mean(axis=2)
        inside = np.zeros(diff.shape, dtype=bool)
        inside[max(y1, 0) : y2, max(x1, 0) : x2] = True
        changes.append((float(diff[inside].mean()), float(diff[~inside].mean())))
    return changes


def _assert_face_swapped(changes: list[tuple[float, float]]) -> None:
    for inside, outside in changes:
        # a swap changes the face a lot and the rest only by re-encoding noise; an output that
        # is shifted, scaled or turned the wrong way round changes everything
        assert inside > 10.0, f"the face barely changed: {changes}"
        assert outside < 6.0, f"pixels away from the face changed: {changes}"
        assert inside > 3 * outside, changes


def test_classic_swap_keeps_frames_fps_duration_and_audio(
    tmp_path: Path, clip_15fps: Path, source_face_path: Path, detector: Any
) -> None:
    output = tmp_path / "swapped.mp4"
    events: list[tuple[str, dict[str, Any]]] = []
    result = run_swap(
        source=str(source_face_path),
        target=str(clip_15fps),
        output=str(output),
        options=SwapOptions(segment_frames=15),
        checkpoint=str(tmp_path / "ckpt"),
        on_event=lambda event, fields: events.append((event, fields)),
    )
    before, after = probe_facts(clip_15fps), probe_facts(output)
    assert (before.frames, before.fps) == (36, 15)
    assert result.frames == result.frames_swapped == 36
    assert result.faces_swapped >= 34  # one face per frame; allow a miss on a blurry frame
    assert (result.segments_done, result.segments_skipped) == (3, 0)
    assert [f["segment"] for e, f in events if e == "segment_committed"] == [0, 1, 2]
    assert after.frames == before.frames
    assert after.fps == before.fps
    assert (after.width, after.height) == (before.width, before.height)
    assert abs(after.duration - before.duration) <= before.frame_s + 1e-6
    assert after.has_audio
    assert abs(after.audio_duration - before.audio_duration) <= before.frame_s
    _assert_face_swapped(_face_change(decoded_frames(clip_15fps), decoded_frames(output), detector))


@pytest.mark.parametrize("rotation", [90, 270])
def test_rotated_clip_keeps_its_rotation_and_is_swapped_upright(
    tmp_path: Path, astronaut: np.ndarray, source_face_path: Path, detector: Any, rotation: int
) -> None:
    clip = make_clip(tmp_path / f"rot{rotation}.mp4", astronaut, frames=24, fps=24, rotate=rotation)
    before = probe_facts(clip)
    assert before.rotation == rotation
    assert (before.width, before.height) == (240, 320)
    upright_in = decoded_frames(clip)
    assert upright_in[0].shape == (240, 320, 3)
    # the coded frames show the face on its side: only upright frames are a fair test
    output = tmp_path / "swapped.mp4"
    run_swap(
        source=str(source_face_path),
        target=str(clip),
        output=str(output),
        options=SwapOptions(segment_frames=10),
        checkpoint=str(tmp_path / "ckpt"),
    )
    after = probe_facts(output)
    assert after.rotation == before.rotation
    assert (after.width, after.height) == (before.width, before.height)
    assert after.frames == before.frames
    assert after.has_audio
    upright_out = decoded_frames(output)
    assert all(len(detector.detect(frame)) == 1 for frame in upright_out[::6])
    _assert_face_swapped(_face_change(upright_in, upright_out, detector))


def _committed(checkpoint: Path) -> dict[int, dict[str, Any]]:
    path = checkpoint / "manifest.json"
    if not path.is_file():
        return {}
    return {int(k): v for k, v in json.loads(path.read_text(encoding="utf-8"))["segments"].items()}


def test_sigterm_then_resume_skips_finished_segments_and_matches_an_uninterrupted_run(
    tmp_path: Path, long_clip: Path, source_face_path: Path, fusionctl: list[str]
) -> None:
    total = RESUME_FRAMES // RESUME_SEGMENT
    checkpoint, output = tmp_path / "ckpt", tmp_path / "out" / "resumed.mp4"
    cmd = [
        *fusionctl,
        "swap",
        "--source",
        str(source_face_path),
        "--target",
        str(long_clip),
        "--output",
        str(output),
        "--checkpoint",
        str(checkpoint),
        "--segment-frames",
        str(RESUME_SEGMENT),
        "--json",
    ]

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _committed(checkpoint):
            assert proc.poll() is None, f"the job ended before a segment was committed: {proc.communicate()}"
            assert time.monotonic() < deadline, "no segment committed within 60 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        stdout, stderr = proc.communicate(timeout=15)
        stopped_in = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 75, stderr
    assert stopped_in < 5.0, f"took {stopped_in:.1f}s to stop after SIGTERM"
    assert stdout == ""
    assert "error:" in stderr
    assert not output.exists()
    assert not output.parent.exists() or not list(output.parent.iterdir())  # no partial output either

    done_before = _committed(checkpoint)
    assert 1 <= len(done_before) < total, f"SIGTERM did not land mid-video: {sorted(done_before)}"
    assert sorted(done_before) == list(range(len(done_before)))  # segments commit in order
    snapshot = {}
    for entry in done_before.values():
        path = checkpoint / entry["file"]
        assert entry["sha256"] == _sha256(path)
        snapshot[entry["file"]] = (path.stat().st_mtime_ns, _sha256(path))

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    skipped = len(done_before)
    assert summary["segments_skipped"] == skipped
    assert summary["segments_done"] == total - skipped
    assert summary["frames"] == RESUME_FRAMES
    assert summary["frames_swapped"] == RESUME_FRAMES - skipped * RESUME_SEGMENT
    skipped_lines = [line for line in rerun.stderr.splitlines() if line.startswith("segment_skipped ")]
    assert len(skipped_lines) == skipped, rerun.stderr
    assert "checkpoint_reset" not in rerun.stderr
    for name, (mtime_ns, digest) in snapshot.items():  # finished segments were not recomputed
        assert (checkpoint / name).stat().st_mtime_ns == mtime_ns, name
        assert _sha256(checkpoint / name) == digest, name
    assert sorted(_committed(checkpoint)) == list(range(total))

    straight = tmp_path / "straight.mp4"
    result = run_swap(
        source=str(source_face_path),
        target=str(long_clip),
        output=str(straight),
        options=SwapOptions(segment_frames=RESUME_SEGMENT),
        checkpoint=str(tmp_path / "fresh"),
    )
    assert (result.segments_done, result.segments_skipped) == (total, 0)
    resumed_md5s, straight_md5s = frame_md5s(output), frame_md5s(straight)
    assert len(resumed_md5s) == RESUME_FRAMES
    assert resumed_md5s == straight_md5s
    assert frame_md5s(long_clip) != straight_md5s  # the comparison would notice an unswapped run
    assert probe_facts(output).has_audio


def test_checkpoint_of_another_job_is_reset_not_reused(
    tmp_path: Path, clip_15fps: Path, source_face_path: Path, astronaut_path: Path
) -> None:
    checkpoint = tmp_path / "ckpt"
    options = SwapOptions(segment_frames=12)

    def job(source: Path, output: str) -> tuple[Any, list[str]]:
        events: list[str] = []
        result = run_swap(
            source=str(source),
            target=str(clip_15fps),
            output=str(tmp_path / output),
            options=options,
            checkpoint=str(checkpoint),
            on_event=lambda event, _fields: events.append(event),
        )
        return result, events

    first, _ = job(source_face_path, "first.mp4")
    assert (first.segments_done, first.segments_skipped) == (3, 0)
    # the same job again reuses everything: so a reset below is the checkpoint's own decision
    again, events = job(source_face_path, "again.mp4")
    assert (again.segments_done, again.segments_skipped, again.frames_swapped) == (0, 3, 0)
    assert events.count("segment_skipped") == 3
    assert "checkpoint_reset" not in events
    assert frame_md5s(tmp_path / "again.mp4") == frame_md5s(tmp_path / "first.mp4")

    other, events = job(astronaut_path, "other.mp4")
    assert "checkpoint_reset" in events
    assert "segment_skipped" not in events
    assert (other.segments_done, other.segments_skipped, other.frames_swapped) == (3, 0, 36)
    manifest = json.loads((checkpoint / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["fingerprint"]["source_sha256"] == _sha256(astronaut_path)
    assert frame_md5s(tmp_path / "other.mp4") != frame_md5s(tmp_path / "first.mp4")


def test_default_auto_on_a_cpu_node_is_libx264_byte_for_byte_and_resumes_its_checkpoints(
    tmp_path: Path, clip_15fps: Path, source_face_path: Path
) -> None:
    if encoder_works("h264_nvenc")[0]:
        pytest.skip("this machine has a working NVENC: auto picks it")
    checkpoint = tmp_path / "ckpt"

    def job(output: str, options: SwapOptions, ckpt: Path | None) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        result = run_swap(
            source=str(source_face_path),
            target=str(clip_15fps),
            output=str(tmp_path / output),
            options=options,
            checkpoint=str(ckpt) if ckpt else None,
            on_event=lambda event, fields: events.append((event, fields)),
        )
        return result, events

    explicit, _ = job("explicit.mp4", SwapOptions(encoder="libx264", segment_frames=15), checkpoint)
    default, events = job("default.mp4", SwapOptions(segment_frames=15), None)
    assert _sha256(tmp_path / "default.mp4") == _sha256(tmp_path / "explicit.mp4")
    summary = default.summary()
    assert summary["encoder"] == explicit.summary()["encoder"] == "libx264"
    assert summary["encoder_reason"].startswith("auto: h264_nvenc")
    assert explicit.summary()["encoder_reason"] == "requested"
    assert ("encoder_chosen", {"encoder": "libx264", "reason": summary["encoder_reason"]}) in events
    if not decoder_works("nvdec")[0]:  # auto's decoder here: the CPU, with NVDEC's failure named
        assert summary["decoder"] == "cpu"
        assert summary["decoder_reason"].startswith("auto: nvdec: ")
        assert ("decoder_chosen", {"decoder": "cpu", "reason": summary["decoder_reason"]}) in events
    # a checkpoint written with libx264 is this job's under auto too: its segments are reused
    resumed, _ = job("resumed.mp4", SwapOptions(segment_frames=15), checkpoint)
    assert (resumed.segments_done, resumed.segments_skipped) == (0, 3)
    assert _sha256(tmp_path / "resumed.mp4") == _sha256(tmp_path / "explicit.mp4")


@pytest.mark.parametrize("rotation", [0, 90])
def test_a_detection_batch_gives_the_output_of_one_frame_at_a_time(
    tmp_path: Path, astronaut: np.ndarray, source_face_path: Path, rotation: int
) -> None:
    """Frames detected several per call (a GPU's default) are swapped exactly as one by one.

    The batch of 4 does not divide the clip (26 frames) or a segment (10): the last
    batch of the video is short, and batches straddle segment boundaries.
    """
    clip = make_clip(tmp_path / "clip.mp4", astronaut, frames=26, fps=24, rotate=rotation)
    outputs = {}
    for batch in (1, 4):
        output = tmp_path / f"batch{batch}.mp4"
        result = run_swap(
            source=str(source_face_path),
            target=str(clip),
            output=str(output),
            options=SwapOptions(encoder="libx264", segment_frames=10, detect_batch=batch),
        )
        assert (result.frames, result.frames_swapped, result.faces_swapped) == (26, 26, 26)
        outputs[batch] = output
    assert frame_md5s(outputs[4]) == frame_md5s(outputs[1])
    assert _sha256(outputs[4]) == _sha256(outputs[1])


def test_detect_batch_is_runtime_only_and_bounded() -> None:
    assert SwapOptions(detect_batch=8).fingerprint() == SwapOptions().fingerprint()
    with pytest.raises(BadInput) as caught:
        SwapOptions(detect_batch=33)
    assert caught.value.field == "detect_batch"
