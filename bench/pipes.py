"""Raw-frame pipe bandwidth between ffmpeg and Python at 1080p bgr24 (issue 19).

Run with ``make bench-pipes`` (or ``python -m bench.pipes``). Every case runs
``--repeat`` times in one process and reports the median fps and its ratio to
the baseline of its group, so the numbers can be read on a noisy machine:

- ``in``: ffmpeg -> Python. ``pipe`` rows read a lavfi ``color`` source (costs
  ffmpeg next to nothing, so the pipe sets the pace); ``decoder`` rows run the
  real :class:`~faceswap.video.Decoder` on a 1080p H.264 clip. ``legacy`` is
  the strategy before issue 19 (a new bytearray per frame, the 64 KiB pipe);
  ``improved`` the ring of reused buffers and the enlarged pipe.
- ``out``: Python -> ffmpeg, the same way: a ``-f null`` sink, then the real
  :class:`~faceswap.video.SegmentEncoder` (libx264 ``veryfast`` CRF 18).
- ``ceiling``: ffmpeg alone decoding and re-encoding the clip (no Python), and
  the same with the two pixel-format conversions the pipeline needs.
- ``transcode``: Decoder -> SegmentEncoder, no face work: bench.core's
  transcode-only path, legacy and improved.

The table is printed and the results written to build/bench/pipes.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import machine, write_section
from faceswap.media import MediaInfo, ffmpeg_binary, probe
from faceswap.pipes import FrameRing, enlarge_pipe, pipe_size, read_frame, write_all
from faceswap.segments import decoder_ring
from faceswap.types import BGRImage
from faceswap.video import Decoder, SegmentEncoder

OUTPUT = Path(__file__).resolve().parent.parent / "build" / "bench" / "pipes.json"
WIDTH, HEIGHT = 1920, 1080
FRAME_BYTES = WIDTH * HEIGHT * 3
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18"]


class LegacyDecoder(Decoder):
    """The Decoder before issue 19: the kernel's pipe, and a new bytearray for every frame."""

    def __init__(self, path: Path, info: MediaInfo) -> None:
        super().__init__(path, info, big_pipe=False)

    def __iter__(self) -> Iterator[BGRImage]:
        stdout = self.proc.stdout
        assert isinstance(stdout, io.RawIOBase)
        yield from _legacy_frames(stdout, (self.info.height, self.info.width, 3))
        self.proc.wait()


class LegacyEncoder(SegmentEncoder):
    """The SegmentEncoder before issue 19: the kernel's pipe, one unchecked write per frame."""

    def write(self, frame: BGRImage) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(np.ascontiguousarray(frame).data.cast("B"))
        self.frames += 1


def _legacy_frames(stdout: io.RawIOBase, shape: tuple[int, int, int]) -> Iterator[BGRImage]:
    frame_bytes = shape[0] * shape[1] * shape[2]
    while True:
        buffer = bytearray(frame_bytes)
        view = memoryview(buffer)
        got = 0
        while got < frame_bytes:
            n = stdout.readinto(view[got:])
            if not n:
                break
            got += n
        if got < frame_bytes:
            return
        yield np.frombuffer(buffer, dtype=np.uint8).reshape(shape)


def _ffmpeg(*args: str) -> list[str]:
    return [ffmpeg_binary(), "-nostdin", "-hide_banner", "-v", "error", *args]


def pipe_in(frames: int, *, improved: bool) -> int:
    """ffmpeg's cheapest source -> Python; returns the frames read."""
    source = f"color=c=gray:size={WIDTH}x{HEIGHT}:rate=30"
    cmd = _ffmpeg("-f", "lavfi", "-i", source, "-frames:v", str(frames), "-pix_fmt", "bgr24", "-f", "rawvideo", "-")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=0)
    assert isinstance(proc.stdout, io.RawIOBase)
    count = 0
    if improved:
        enlarge_pipe(proc.stdout.fileno(), 2 * FRAME_BYTES)
        ring = FrameRing(FRAME_BYTES, decoder_ring(FRAME_BYTES))
        while read_frame(proc.stdout, ring.take()) == FRAME_BYTES:
            count += 1
    else:
        count = sum(1 for _ in _legacy_frames(proc.stdout, (HEIGHT, WIDTH, 3)))
    proc.stdout.close()
    proc.wait()
    return count


def pipe_out(frames: int, pool: list[BGRImage], *, improved: bool) -> int:
    """Python -> ffmpeg's cheapest sink (``-f null``); returns the frames written."""
    size = f"{WIDTH}x{HEIGHT}"
    cmd = _ffmpeg(
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", size, "-framerate", "30", "-i", "pipe:0", "-f", "null", "-"
    )
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None
    if improved:
        enlarge_pipe(proc.stdin.fileno(), 2 * FRAME_BYTES)
    for i in range(frames):
        frame = pool[i % len(pool)]
        if improved:
            write_all(proc.stdin.fileno(), frame)
        else:
            proc.stdin.write(np.ascontiguousarray(frame).data.cast("B"))
    proc.stdin.close()
    proc.wait()
    return frames


def decode(clip: Path, info: MediaInfo, *, improved: bool) -> int:
    decoder = Decoder(clip, info, ring=decoder_ring(FRAME_BYTES)) if improved else LegacyDecoder(clip, info)
    try:
        return sum(1 for _ in decoder)
    finally:
        decoder.close()


def _encoder(path: Path, info: MediaInfo, *, improved: bool) -> SegmentEncoder:
    kind = SegmentEncoder if improved else LegacyEncoder
    return kind(
        path,
        width=info.width,
        height=info.height,
        fps=info.fps,
        encoder="libx264",
        quality=18,
        preset="veryfast",
        big_pipe=improved,
    )


def encode(frames: int, pool: list[BGRImage], info: MediaInfo, workdir: Path, *, improved: bool) -> int:
    encoder = _encoder(workdir / "encode.ts", info, improved=improved)
    for i in range(frames):
        encoder.write(pool[i % len(pool)])
    encoder.finish()
    return frames


def transcode(clip: Path, info: MediaInfo, workdir: Path, *, improved: bool) -> int:
    """bench.core's transcode-only path: Decoder -> SegmentEncoder, no face work."""
    encoder = _encoder(workdir / "transcode.ts", info, improved=improved)
    decoder = Decoder(clip, info, ring=decoder_ring(FRAME_BYTES)) if improved else LegacyDecoder(clip, info)
    for frame in decoder:
        encoder.write(frame)
    encoder.finish()
    decoder.close()
    return encoder.frames


def ceiling(clip: Path, frames: int, *, conversions: bool) -> int:
    """ffmpeg alone: decode and encode with the pipeline's settings, no Python (the most any pipe can give)."""
    vf = ["-vf", "format=bgr24,format=yuv420p"] if conversions else []
    subprocess.run(_ffmpeg("-i", str(clip), "-an", *vf, *X264, "-pix_fmt", "yuv420p", "-f", "null", "-"), check=True)
    return frames


def make_clip(workdir: Path, frames: int) -> Path:
    clip = workdir / "clip1080.mp4"
    source = f"testsrc2=size={WIDTH}x{HEIGHT}:rate=30"
    subprocess.run(
        _ffmpeg("-y", "-f", "lavfi", "-i", source, "-frames:v", str(frames), *X264, "-pix_fmt", "yuv420p", str(clip)),
        check=True,
    )
    return clip


def frame_pool(clip: Path, info: MediaInfo, count: int = 8) -> list[BGRImage]:
    """A few real frames, written again and again (frames kept in memory: 6.2 MB each)."""
    decoder = Decoder(clip, info)
    pool: list[BGRImage] = []
    for frame in decoder:
        pool.append(frame)
        if len(pool) == count:
            break
    decoder.close()
    return pool


def measure(cases: list[tuple[str, str, str, Callable[[], int]]], repeat: int) -> list[dict[str, Any]]:
    """Every case once per round, ``repeat`` rounds (so drift on a shared machine hits all cases alike)."""
    fps: list[list[float]] = [[] for _ in cases]
    for round_ in range(repeat):
        for n, (_, label, _, run) in enumerate(cases):
            start = time.perf_counter()
            frames = run()
            fps[n].append(frames / (time.perf_counter() - start))
            step = f"round {round_ + 1}/{repeat}, case {n + 1}/{len(cases)}"
            print(f"[{step}] {label}: {fps[n][-1]:.1f} fps", file=sys.stderr, flush=True)
    return [
        {
            "group": group,
            "case": label,
            "strategy": strategy,
            "fps_median": statistics.median(runs),
            "fps_runs": [round(f, 1) for f in runs],
        }
        for (group, label, strategy, _), runs in zip(cases, fps, strict=True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=120, help="frames per run (1080p, 6.2 MB each)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/performance.md")
    args = parser.parse_args(argv)
    frames = args.frames
    with tempfile.TemporaryDirectory(prefix="fusionplane-bench-pipes-") as tmp:
        workdir = Path(tmp)
        clip = make_clip(workdir, frames)
        info = probe(clip, field="target")
        pool = frame_pool(clip, info)
        cases: list[tuple[str, str, str, Callable[[], int]]] = []
        for improved in (False, True):
            strategy = "improved" if improved else "legacy"
            cases += [
                ("in", f"pipe {strategy}", strategy, lambda i=improved: pipe_in(frames, improved=i)),
                ("in", f"decoder {strategy}", strategy, lambda i=improved: decode(clip, info, improved=i)),
                ("out", f"pipe {strategy}", strategy, lambda i=improved: pipe_out(frames, pool, improved=i)),
                (
                    "out",
                    f"encoder {strategy}",
                    strategy,
                    lambda i=improved: encode(frames, pool, info, workdir, improved=i),
                ),
                (
                    "transcode",
                    f"transcode {strategy}",
                    strategy,
                    lambda i=improved: transcode(clip, info, workdir, improved=i),
                ),
            ]
        cases += [
            ("ceiling", "ffmpeg decode+encode", "ceiling", lambda: ceiling(clip, frames, conversions=False)),
            ("ceiling", "ffmpeg + bgr24 round trip", "ceiling", lambda: ceiling(clip, frames, conversions=True)),
        ]
        results = measure(cases, args.repeat)
        default_pipe = enlarged = 0
        with contextlib.suppress(OSError):
            probe_pipe = subprocess.Popen(["true"], stdout=subprocess.PIPE)
            assert probe_pipe.stdout is not None
            default_pipe = pipe_size(probe_pipe.stdout.fileno())
            enlarged = enlarge_pipe(probe_pipe.stdout.fileno(), 2 * FRAME_BYTES)
            probe_pipe.communicate()
    baselines = {(r["group"], r["case"].split()[0]): r["fps_median"] for r in results if r["strategy"] == "legacy"}
    ceiling_fps = next(r["fps_median"] for r in results if r["case"] == "ffmpeg decode+encode")
    for row in results:
        base = baselines.get((row["group"], row["case"].split()[0]))
        row["ratio_to_legacy"] = round(row["fps_median"] / base, 2) if base else None
        row["share_of_ceiling"] = round(row["fps_median"] / ceiling_fps, 2)
        row["fps_median"] = round(row["fps_median"], 1)
    report = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "frames": frames,
        "repeat": args.repeat,
        "frame_bytes": FRAME_BYTES,
        "pipe_bytes": {"default": default_pipe, "enlarged": enlarged},
        "cases": results,
    }
    table = markdown(report)
    print(table)
    if not args.no_write:
        write_section("bench-pipes", table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def markdown(report: dict[str, Any]) -> str:
    pipes = report["pipe_bytes"]
    lines = [
        f"Measured {report['date']} on {report['machine']}; 1080p bgr24 ({report['frame_bytes'] / 1e6:.1f} MB a "
        f"frame), {report['frames']} frames a run, median of {report['repeat']} runs; pipe {pipes['default']} -> "
        f"{pipes['enlarged']} bytes. Command: `make bench-pipes`.",
        "",
        "| group | case | fps | x legacy | of ffmpeg alone |",
        "|---|---|---|---|---|",
    ]
    for row in report["cases"]:
        ratio = f"{row['ratio_to_legacy']:.2f}" if row["ratio_to_legacy"] is not None else "-"
        lines.append(
            f"| {row['group']} | {row['case']} | {row['fps_median']:.1f} | {ratio} | {row['share_of_ceiling']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
