"""Running ``fusionctl worker serve`` (the warm local worker) in the foreground, for its tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.no_metadata import subprocess_env

REPO = Path(__file__).resolve().parents[2]

__all__ = ["serve_warm_worker"]


def serve_warm_worker(socket_path: Path, *, idle_exit_s: float) -> subprocess.CompletedProcess[str]:
    """The daemon on ``socket_path`` until it refuses or has been idle ``idle_exit_s``; its exit and logs."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "controlplane.cli",
            "worker",
            "serve",
            "--socket",
            str(socket_path),
            "--idle-exit-s",
            str(idle_exit_s),
        ],
        env=subprocess_env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
