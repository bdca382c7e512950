"""GPU worker benchmark: per-stage timings with the execution provider and the encoder named.

Run with ``make bench-gpu`` on a GPU node (it builds ``.venv-gpu`` with the
pinned stack of deploy/worker/requirements-gpu.txt first), or
``python -m bench.gpu`` in any environment. Every figure issue 19 names is
measured in one process, next to its CPU baseline on the same node:

- **set-up**: building the job's models (detector + swapper) for the first
  job in the process and again for a second job (the session cache);
- **detector**: YuNet per 1080p frame through the published float graph and
  through the uint8 graph at batch sizes 1, 4 and 8;
- **ceiling**: ffmpeg alone decoding and re-encoding the clip (no Python),
  and the core's transcode-only path (ffmpeg -> Python -> ffmpeg);
- **end to end**: the full job (decode, detect, align, swap, paste, encode,
  segment commit, concat) at 1080p for each provider and encoder, and a
  short 720p clip on the GPU against the node's CPUs.

The providers and encoders default to every one that really works here
(the same load and capability checks ``auto`` uses); name them with
``--providers`` and ``--encoders``. Results: a table in docs/performance.md
(section ``bench-gpu``, skipped with ``--no-write``) and JSON in
build/bench/gpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import onnxruntime as ort

from bench.core import transcode_fps
from bench.report import machine, write_section
from controlplane.cli.demo import make_samples
from faceswap import SwapOptions, run_swap
from faceswap.decoders import decoder_works
from faceswap.detector import YuNetDetector
from faceswap.detector_graph import batched_uint8_model_bytes
from faceswap.encoders import encoder_args, encoder_works
from faceswap.media import ffmpeg_binary, probe
from faceswap.models import ModelStore
from faceswap.pipeline import DETECTOR_MODEL, STAGES
from faceswap.runtime import ExecutionConfig, create_session, provider_probes
from faceswap.types import BGRImage
from faceswap.video import Decoder

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "bench" / "gpu.json"
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
DETECT_BATCHES = (1, 4, 8)


def _fps(repeat: int, run: Callable[[], float]) -> float:
    return round(statistics.median(run() for _ in range(repeat)), 2)


def _gpu() -> dict[str, str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {"name": "none", "driver": "-", "memory": "-"}
    try:
        line = subprocess.run(
            [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader", "--id=0"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"name": "unknown", "driver": "-", "memory": "-"}
    name, driver, memory = ([*line.split(", "), "-", "-"])[:3]
    return {"name": name, "driver": driver, "memory": memory}


def _ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_binary(), "-version"], capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.split("\n", 1)[0].removeprefix("ffmpeg version ").split(" ", 1)[0]


_SET_UP_CHILD = """
import json, sys, time
from pathlib import Path
from faceswap import SwapOptions
from faceswap.models import ModelStore
from faceswap.pipeline import FaceSwapper
options = SwapOptions(swapper=sys.argv[1], execution_provider=sys.argv[2])
models = ModelStore(Path(sys.argv[3])) if sys.argv[3] else None
times = []
for _ in range(3):
    start = time.perf_counter()
    FaceSwapper(options, models=models)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def set_up_seconds(swapper: str, provider: str, model_dir: Path | None) -> dict[str, float]:
    """Models for the first job in a fresh process (CUDA context, probes, sessions), then for the next two."""
    done = subprocess.run(
        [sys.executable, "-c", _SET_UP_CHILD, swapper, provider, str(model_dir or "")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
        cwd=REPO,
    )
    first, *rest = json.loads(done.stdout.splitlines()[-1])
    return {"first_job_s": round(first, 3), "next_job_s": round(max(rest), 4)}


def detector_ms(provider: str, frames: list[BGRImage], repeat: int) -> dict[str, float]:
    """YuNet per frame: the published float graph, and the uint8 graph at several batch sizes."""
    path = ModelStore().verified_path(DETECTOR_MODEL, role="detector")
    config = ExecutionConfig(provider=provider)
    published = YuNetDetector(create_session(path, config))
    batched = YuNetDetector(create_session(path, config, rewrite=batched_uint8_model_bytes))

    def per_frame(run: Callable[[], object]) -> float:
        run()  # warm: the first call of a shape builds kernels or engines
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return round(statistics.median(times) * 1000 / len(frames), 3)

    def in_batches(size: int) -> None:
        for i in range(0, len(frames), size):
            batched.detect_many(frames[i : i + size])

    result = {"float_b1": per_frame(lambda: [published.detect(f) for f in frames])}
    for batch in DETECT_BATCHES:
        result[f"uint8_b{batch}"] = per_frame(partial(in_batches, batch))
    return result


def ffmpeg_alone_fps(clip: Path, encoder: str, frames: int, *, via_bgr: bool = False) -> float:
    """Decode and re-encode with ffmpeg and no Python in between: the ceiling for any job.

    ``via_bgr`` adds the two colour conversions the pipeline needs (yuv420p -> bgr24 for the
    frames Python sees, and back for the encoder), still inside one ffmpeg.
    """
    options = SwapOptions(encoder=encoder)
    convert = ["-vf", "format=bgr24,format=yuv420p"] if via_bgr else []
    start = time.perf_counter()
    subprocess.run(
        [
            ffmpeg_binary(),
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-i",
            str(clip),
            "-an",
            *convert,
            *encoder_args(encoder, options.quality, options.preset),
            "-f",
            "mpegts",
            "-",
        ],
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=600,
    )
    return frames / (time.perf_counter() - start)


def end_to_end(
    clip: Path, source: Path, workdir: Path, options: SwapOptions, models: ModelStore | None, repeat: int
) -> dict[str, Any]:
    fps_runs: list[float] = []
    stage_runs: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for i in range(repeat):
        out = workdir / f"e2e-{i}.mp4"
        result = run_swap(source=str(source), target=str(clip), output=str(out), options=options, models=models)
        fps_runs.append(result.frames / result.wall_s)
        for stage in STAGES:
            stage_runs[stage].append(result.stage_s[stage] * 1000 / max(result.frames, 1))
        out.unlink()
    return {
        "fps": round(statistics.median(fps_runs), 2),
        "fps_runs": [round(f, 2) for f in fps_runs],
        "ms_per_frame": {stage: round(statistics.median(v), 2) for stage, v in stage_runs.items()},
    }


def working_providers() -> list[str]:
    """Every provider whose libraries load here (the check ``auto`` uses), best first."""
    return [probe.provider for probe in provider_probes() if probe.loaded]


def working_decoders() -> list[str]:
    """The CPU, and NVDEC where a test decode on this node succeeds."""
    return ["cpu", *(["nvdec"] if decoder_works("nvdec")[0] else [])]


def working_encoders() -> list[str]:
    """libx264, and the NVENC encoders where a test encode on this node succeeds."""
    return ["libx264", *(name for name in ("h264_nvenc", "hevc_nvenc") if encoder_works(name)[0])]


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    gpu = env["gpu"]
    lines = [
        f"Measured {results['date']} on {gpu['name']} (driver {gpu['driver']}, {gpu['memory']}), "
        f"{env['machine']}; onnxruntime {env['onnxruntime']}, ffmpeg {env['ffmpeg']}, "
        f"swapper `{results['swapper']}`, one face; median of {results['repeat']} runs. "
        f"Command: `make bench-gpu`.",
        "",
        "| provider | set-up, first job (s) | set-up, next job (s) | detect float b1 | uint8 b1 | uint8 b4 "
        "| uint8 b8 (ms/frame) |",
        "|---|---|---|---|---|---|---|",
    ]
    for provider, row in results["providers"].items():
        setup, det = row["set_up"], row["detector_ms"]
        lines.append(
            f"| {provider} | {setup['first_job_s']} | {setup['next_job_s']} | {det['float_b1']} | "
            f"{det['uint8_b1']} | {det['uint8_b4']} | {det['uint8_b8']} |"
        )
    lines += [
        "",
        f"End to end, {results['size']} clip of {results['frames']} frames (fps), with ffmpeg alone and the "
        "transcode-only path as ceilings:",
        "",
        "| provider | decoder | encoder | end-to-end fps | ffmpeg alone | ffmpeg via bgr24 | transcode-only "
        "| ratio to ffmpeg alone | " + " | ".join(STAGES) + " (ms/frame) |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(STAGES),
    ]
    for case in results["end_to_end"]:
        ceiling = results["ceilings"][case["encoder"]]
        ms = case["ms_per_frame"]
        lines.append(
            f"| {case['provider']} | {case['decoder']} | {case['encoder']} | **{case['fps']:.1f}** | "
            f"{ceiling['ffmpeg_alone_fps']:.1f} | "
            f"{ceiling['ffmpeg_via_bgr_fps']:.1f} | {ceiling['transcode_fps']:.1f} | "
            f"{case['fps'] / ceiling['ffmpeg_alone_fps']:.2f} | " + " | ".join(f"{ms[s]:.2f}" for s in STAGES) + " |"
        )
    short = results["short_clip"]
    if short:
        lines += [
            "",
            f"Short clip ({short['frames']} frames, {short['size']}): "
            + ", ".join(f"{p} {fps:.1f} fps" for p, fps in short["fps"].items())
            + ".",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", help="comma-separated; default: every provider that loads here")
    parser.add_argument("--encoders", help="comma-separated; default: every encoder that works here")
    parser.add_argument("--decoders", help="comma-separated (cpu, nvdec); default: every decoder that works here")
    parser.add_argument("--size", default="1080p", choices=sorted(SIZES))
    parser.add_argument("--frames", type=int, default=480)
    parser.add_argument("--short-frames", type=int, default=96)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--swapper", default="inswapper_128", choices=("classic", "inswapper_128"))
    parser.add_argument("--no-write", action="store_true", help="do not update docs/performance.md")
    parser.add_argument("--output", type=Path, default=OUT, help="where the JSON results go")
    args = parser.parse_args(argv)
    providers = args.providers.split(",") if args.providers else working_providers()
    encoders = args.encoders.split(",") if args.encoders else working_encoders()
    decoders = args.decoders.split(",") if args.decoders else working_decoders()
    environment = {
        "gpu": _gpu(),
        "machine": machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "ffmpeg": _ffmpeg_version(),
    }
    print(f"environment: {json.dumps(environment)}", flush=True)
    print(f"providers {providers}, decoders {decoders}, encoders {encoders}", flush=True)
    results: dict[str, Any] = {
        "date": date.today().isoformat(),
        "environment": environment,
        "swapper": args.swapper,
        "size": args.size,
        "frames": args.frames,
        "repeat": args.repeat,
        "providers": {},
        "ceilings": {},
        "end_to_end": [],
        "short_clip": {},
    }
    with tempfile.TemporaryDirectory(prefix="fusionplane-bench-gpu-") as tmp:
        workdir = Path(tmp)
        models = None
        if args.swapper == "inswapper_128":
            # stand-ins with the real signatures; the real weights are licensed and not shipped
            sys.path.insert(0, str(REPO))
            from tests.support.standin_models import write_model_dir

            models = ModelStore(write_model_dir(workdir / "models"))
        source, clip = make_samples(workdir / "long", frames=args.frames, size=SIZES[args.size])
        info = probe(clip, field="target")
        decoder = Decoder(clip, info)
        frames = [frame.copy() for _, frame in zip(range(8), decoder, strict=False)]
        decoder.close()
        for provider in providers:
            row = {
                "set_up": set_up_seconds(args.swapper, provider, models.model_dir if models else None),
                "detector_ms": detector_ms(provider, frames, args.repeat),
            }
            results["providers"][provider] = row
            print(f"{provider}: {json.dumps(row)}", flush=True)
        for encoder in encoders:
            ceiling = {
                "ffmpeg_alone_fps": _fps(args.repeat, partial(ffmpeg_alone_fps, clip, encoder, args.frames)),
                "ffmpeg_via_bgr_fps": _fps(
                    args.repeat, partial(ffmpeg_alone_fps, clip, encoder, args.frames, via_bgr=True)
                ),
                "transcode_fps": _fps(args.repeat, partial(transcode_fps, clip, workdir, SwapOptions(encoder=encoder))),
            }
            results["ceilings"][encoder] = ceiling
            print(f"{encoder} ceilings: {json.dumps(ceiling)}", flush=True)
            for provider in providers:
                for decoder in decoders:
                    options = SwapOptions(
                        swapper=args.swapper, execution_provider=provider, encoder=encoder, decoder=decoder
                    )
                    case = end_to_end(clip, source, workdir, options, models, args.repeat)
                    case.update(provider=provider, decoder=decoder, encoder=encoder)
                    results["end_to_end"].append(case)
                    print(
                        f"{provider} + {decoder} + {encoder}: {case['fps']:.1f} fps {case['ms_per_frame']}", flush=True
                    )
        if args.short_frames:
            short_source, short_clip = make_samples(workdir / "short", frames=args.short_frames, size=SIZES["720p"])
            fps = {}
            for provider in providers:
                # the node's CPUs alone against the GPU with whatever auto decodes on
                decoder = "cpu" if provider == "cpu" else "auto"
                options = SwapOptions(
                    swapper=args.swapper, execution_provider=provider, encoder=encoders[0], decoder=decoder
                )
                fps[provider] = end_to_end(short_clip, short_source, workdir, options, models, args.repeat)["fps"]
            results["short_clip"] = {"frames": args.short_frames, "size": "720p", "fps": fps}
            print(f"short clip: {json.dumps(results['short_clip'])}", flush=True)
    table = markdown(results)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_write:
        write_section("bench-gpu", table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
