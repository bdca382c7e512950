"""bench/gpu_device.sh refuses to run on a half-carried or mismatched pack, before installing anything.

Device time is scarce (15 minutes a session): a missing part or wheels for
another Python must say so at once, not after a failed install.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.no_metadata import subprocess_env

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_device.sh"


def _run(tmp_path: Path, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(
        DEVICE_DIR=str(tmp_path / "pack"), OUT=str(tmp_path / "out"), DEVICE_PYTHON=python, TMPDIR=str(tmp_path)
    )
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _pack(tmp_path: Path, *, parts: int, carried: int, python: str) -> None:
    folder = tmp_path / "pack"
    folder.mkdir()
    (folder / "manifest").write_text(f"parts={parts}\nsha256={'0' * 64}\npython={python}\n", encoding="utf-8")
    for n in range(carried):
        (folder / f"pack.part-{n:02d}").write_bytes(b"x")


def test_a_missing_part_is_named_before_anything_is_installed(tmp_path: Path) -> None:
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    _pack(tmp_path, parts=3, carried=2, python=mine)
    done = _run(tmp_path, "run")
    assert done.returncode == 1
    assert "only 2 of 3 parts arrived" in done.stderr
    assert not (tmp_path / "out" / "gpu.json").exists()


def test_wheels_for_another_python_are_refused(tmp_path: Path) -> None:
    _pack(tmp_path, parts=1, carried=1, python="3.99")
    done = _run(tmp_path, "run")
    assert done.returncode == 1
    assert "the pack holds wheels for Python 3.99" in done.stderr


def test_a_pack_that_does_not_match_its_checksum_stops_there(tmp_path: Path) -> None:
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    _pack(tmp_path, parts=1, carried=1, python=mine)
    done = _run(tmp_path, "run")
    assert done.returncode != 0
    assert "FAILED" in done.stdout + done.stderr  # sha256sum -c names the mismatch


def test_receive_shows_what_has_arrived(tmp_path: Path) -> None:
    _pack(tmp_path, parts=3, carried=2, python="3.12")
    done = _run(tmp_path, "receive")
    assert done.returncode == 0, done.stderr
    assert "arrived: 2 part(s)" in done.stdout
    assert "parts=3" in done.stdout


def test_an_unknown_verb_is_a_usage_error(tmp_path: Path) -> None:
    done = _run(tmp_path, "deploy")
    assert done.returncode == 2
    assert "usage:" in done.stderr
