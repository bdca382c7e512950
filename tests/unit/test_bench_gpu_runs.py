"""`make bench-gpu` stays runnable: its benchmark goes through every step on CPU (issue 19 item 6).

Nothing here is timed; the figures come from a GPU node. This only proves the
one command a GPU node runs does not break between GPU runs: every section of
its results is there, for the provider and encoder it was told to use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.no_metadata import subprocess_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_bench_gpu_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    output = tmp_path / "gpu.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.gpu",
            "--providers",
            "cpu",
            "--encoders",
            "libx264",
            "--size",
            "720p",
            "--frames",
            "12",
            "--short-frames",
            "6",
            "--repeat",
            "1",
            "--swapper",
            "classic",
            "--no-write",
            "--output",
            str(output),
        ],
        cwd=REPO,
        env=subprocess_env(
            TMPDIR=str(tmp_path), PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        ),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["environment"]["onnxruntime"]
    row = results["providers"]["cpu"]
    assert row["set_up"]["first_job_s"] > 0
    assert set(row["detector_ms"]) == {"float_b1", "uint8_b1", "uint8_b4", "uint8_b8"}
    assert all(ms > 0 for ms in row["detector_ms"].values())
    assert set(results["ceilings"]["libx264"]) == {"ffmpeg_alone_fps", "ffmpeg_via_bgr_fps", "transcode_fps"}
    (case,) = results["end_to_end"]
    # the decoders: every one that works here (no NVDEC on a CPU machine)
    assert (case["provider"], case["decoder"], case["encoder"]) == ("cpu", "cpu", "libx264")
    assert case["fps"] > 0
    assert results["short_clip"]["fps"]["cpu"] > 0
    assert "| cpu | cpu | libx264 |" in done.stdout
