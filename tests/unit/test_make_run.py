"""``make run`` needs only Python and ffmpeg, and listens where the command line says.

``make -n`` prints what a target would run, its prerequisites' recipes
included, without running any of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: what only the tests need (make test-deps); make run must not install or demand any of it
TEST_ONLY = ("postgresql", "prometheus", "npm", "chromium", "node_modules")


def outside_make() -> dict[str, str]:
    """This environment without what an enclosing ``make test`` passes down (its variables and flags)."""
    inherited = ("MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKELEVEL")
    return {name: value for name, value in os.environ.items() if name not in inherited}


def dry_run(*args: str, **env: str) -> str:
    make = shutil.which("make")
    assert make, "make is part of the toolchain (CI runs make test)"
    done = subprocess.run(
        [make, "-n", "--no-print-directory", *args],
        cwd=ROOT,
        env={**outside_make(), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout


def serve_line(output: str) -> str:
    (line,) = [line for line in output.splitlines() if "fusionctl serve" in line]
    return line


def test_run_listens_on_loopback_8080_by_default() -> None:
    assert serve_line(dry_run("run")).endswith("fusionctl serve --host 127.0.0.1 --port 8080")


def test_run_takes_port_and_host_from_the_command_line() -> None:
    line = serve_line(dry_run("run", "PORT=9090", "HOST=0.0.0.0"))
    assert line.endswith("fusionctl serve --host 0.0.0.0 --port 9090")


def test_run_ignores_host_and_port_in_the_environment() -> None:
    # zsh and some PaaS set HOST or PORT for their own reasons
    assert serve_line(dry_run("run", HOST="build-box", PORT="5000")).endswith("--host 127.0.0.1 --port 8080")


@pytest.mark.parametrize("target", ["run", "demo"])
def test_run_and_demo_need_only_python_and_ffmpeg(target: str) -> None:
    output = dry_run(target)
    assert "ffmpeg" in output
    assert not [word for word in TEST_ONLY if word in output], output


def test_system_deps_still_covers_what_the_tests_need() -> None:
    output = dry_run("system-deps")
    assert all(word in output for word in ("ffmpeg", "postgresql", "prometheus", "npm", "chromium"))
