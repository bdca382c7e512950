"""Face-swap core benchmark: per-stage timings and end-to-end fps on CPU.

Run with ``make bench-core`` (or ``python -m bench.core``). For 720p and
1080p clips with one face, and for the classic and the stand-in inswapper
swappers, it runs the full pipeline (decode, detect, align, swap, paste,
encode, segment commit, concat) ``--repeat`` times and reports medians. A
transcode-only baseline (same decoder and encoder, no face work) runs in the
same process so results can be read as a ratio on a noisy shared machine.

Stages overlap (decoding and encoding run on their own threads), so stage
times do not add up to the wall time; ``decode`` is the time the swapping
thread waited for a frame.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench.report import write_section
from controlplane.cli.demo import make_samples
from faceswap import SwapOptions, run_swap
from faceswap.encoders import choose_encoder
from faceswap.media import probe
from faceswap.models import ModelStore
from faceswap.pipeline import STAGES
from faceswap.segments import decoder_ring
from faceswap.video import Decoder, SegmentEncoder

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def transcode_fps(clip: Path, workdir: Path, options: SwapOptions) -> float:
    """Decode + encode only, with the pipeline's settings: the floor for any swap."""
    info = probe(clip, field="target")
    encoder_name = choose_encoder(options.encoder).encoder  # auto -> what run_swap would use here
    start = time.perf_counter()
    encoder = SegmentEncoder(
        workdir / "baseline.ts",
        width=info.width,
        height=info.height,
        fps=info.fps,
        encoder=encoder_name,
        quality=options.quality,
        preset=options.preset,
    )
    decoder = Decoder(clip, info, ring=decoder_ring(info.width * info.height * 3))
    frames = 0
    for frame in decoder:
        encoder.write(frame)
        frames += 1
    encoder.finish()
    decoder.close()
    return frames / (time.perf_counter() - start)


def run_case(
    clip: Path, source: Path, workdir: Path, swapper: str, models: ModelStore | None, repeat: int
) -> dict[str, Any]:
    fps_runs: list[float] = []
    stage_runs: dict[str, list[float]] = {stage: [] for stage in STAGES}
    frames = 0
    for i in range(repeat):
        out = workdir / f"{swapper}-{i}.mp4"
        result = run_swap(
            source=str(source), target=str(clip), output=str(out), options=SwapOptions(swapper=swapper), models=models
        )
        frames = result.frames
        fps_runs.append(result.frames / result.wall_s)
        for stage in STAGES:
            stage_runs[stage].append(result.stage_s[stage] * 1000 / result.frames)
        out.unlink()
    return {
        "frames": frames,
        "fps_median": statistics.median(fps_runs),
        "fps_runs": [round(f, 2) for f in fps_runs],
        "ms_per_frame": {stage: round(statistics.median(v), 2) for stage, v in stage_runs.items()},
    }


def markdown(results: dict[str, Any]) -> str:
    meta = results["machine"]
    lines = [
        f"Measured {results['date']} on {meta['cpus']} CPU cores ({meta['processor']}), "
        f"Python {meta['python']}, onnxruntime CPU, ffmpeg/libx264 `veryfast` CRF 18; "
        f"{results['frames']} frames per clip, median of {results['repeat']} runs. "
        f"Command: `make bench-core`.",
        "",
        "| clip | swapper | end-to-end fps | transcode-only fps | ratio | decode | detect | align | swap "
        "| paste | encode (ms/frame) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in results["cases"]:
        ms = case["ms_per_frame"]
        lines.append(
            f"| {case['clip']} | {case['swapper']} | **{case['fps_median']:.1f}** | {case['baseline_fps']:.1f} | "
            f"{case['fps_median'] / case['baseline_fps']:.2f} | " + " | ".join(f"{ms[s]:.1f}" for s in STAGES) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="720p,1080p")
    parser.add_argument("--swappers", default="classic,inswapper_128")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/performance.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fusionplane-bench-") as tmp:
        workdir = Path(tmp)
        models = None
        if "inswapper_128" in args.swappers:
            # stand-ins with the real signatures; the real weights are licensed and not shipped
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.support.standin_models import write_model_dir

            models = ModelStore(write_model_dir(workdir / "models"))
        cases = []
        for size_name in args.sizes.split(","):
            clip_dir = workdir / size_name
            source, clip = make_samples(clip_dir, frames=args.frames, size=SIZES[size_name])
            baseline = statistics.median(transcode_fps(clip, clip_dir, SwapOptions()) for _ in range(args.repeat))
            for swapper in args.swappers.split(","):
                case = run_case(clip, source, clip_dir, swapper, models if swapper != "classic" else None, args.repeat)
                case.update(clip=size_name, swapper=swapper, baseline_fps=baseline)
                cases.append(case)
                print(
                    f"{size_name} {swapper}: {case['fps_median']:.1f} fps (transcode-only {baseline:.1f} fps) "
                    f"ms/frame {case['ms_per_frame']}",
                    flush=True,
                )
    results = {
        "date": date.today().isoformat(),
        "frames": args.frames,
        "repeat": args.repeat,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "cases": cases,
    }
    table = markdown(results)
    print(table)
    print(json.dumps(results))
    if not args.no_write:
        write_section("bench-core", table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
