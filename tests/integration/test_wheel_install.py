"""The wheel alone runs the control plane: built, installed in a fresh venv, started from an empty directory.

An operator's ``pip install fusionplane-*.whl`` has no checkout beside it:
the migrations and the default policy must come from the installed package.
The wheel is built from a copy of this tree (a stale ``build/`` could hide a
file missing from the package data), offline (``--no-build-isolation``: the
dev venv holds the build backend), and installed with ``--no-deps`` into a
venv whose only other path is the dev venv's site-packages, added by a .pth
file after the install, so no dependency is downloaded again. The package's
own code, its data and its ``fusionctl`` come only from the wheel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.store.migrate import head_revision
from tests.support.loopback import free_port
from tests.support.no_metadata import NO_METADATA_ENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
#: top-level entries of a working tree that are not sources (.gitignore's, and git's own)
NOT_SOURCES = {".git", ".venv", "node_modules", "var", "build", "dist", ".whl", ".hypothesis"}
READY_WITHIN_S = 60.0

Done = subprocess.CompletedProcess[str]


def _not_sources(folder: str, names: list[str]) -> set[str]:
    junk = {name for name in names if name == "__pycache__" or name.endswith((".egg-info", "_cache"))}
    return junk | (NOT_SOURCES & set(names) if Path(folder) == ROOT else set())


def run(argv: list[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> Done:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_not_sources)
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, source])
    (wheel,) = dist.glob("fusionplane-*.whl")
    return wheel


def install_in_fresh_venv(wheel: Path, venv: Path) -> Path:
    """The venv's site-packages, the wheel installed there and the dev venv's packages on its path."""
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel])
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # after the install, so pip sees no fusionplane already there; a plain path line: the dev venv's own
    # .pth files (its editable install of this checkout among them) are not read
    dev = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "fusionplane-test-dependencies.pth").write_text("".join(f"{path}\n" for path in sorted(dev)))
    return site


def bare_env(home: Path) -> dict[str, str]:
    """No FUSIONPLANE_* and no PYTHONPATH: what a new operator's shell has."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", **NO_METADATA_ENV}


@contextlib.contextmanager
def serving(fusionctl: Path, cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """``fusionctl serve`` until the block ends, stopped by its PID; yields its URL once /readyz says ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = cwd / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [fusionctl, "serve", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_WITHIN_S
        while True:
            assert process.poll() is None, "serve exited:\n" + log.read_text(errors="replace")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "serve was not ready:\n" + log.read_text(errors="replace")
            time.sleep(0.2)
        yield url
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_the_installed_wheel_migrates_and_serves_from_an_empty_directory(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    site = install_in_fresh_venv(wheel, venv)
    fusionctl = venv / "bin" / "fusionctl"
    empty = tmp_path / "empty"
    empty.mkdir()
    env = bare_env(tmp_path / "home")

    # the code under test is the wheel's, not this checkout's
    where = run(
        [venv / "bin" / "python", "-c", "import controlplane; print(controlplane.__file__)"], cwd=empty, env=env
    )
    assert Path(where.stdout.strip()).is_relative_to(site)
    shipped_policy = site / "controlplane" / "policy_sources" / "default.json"
    assert not shipped_policy.is_symlink()
    assert shipped_policy.read_bytes() == (ROOT / "policies" / "default.json").read_bytes()

    run([fusionctl, "db", "upgrade"], cwd=empty, env=env)
    current = run([fusionctl, "db", "current"], cwd=empty, env=env)
    assert head_revision() in current.stdout + current.stderr
    assert (empty / "var" / "fusionplane.db").is_file()

    with serving(fusionctl, empty, env) as url:
        token = (empty / "var" / "dev-token").read_text(encoding="utf-8").strip()
        ready = httpx.get(f"{url}/readyz", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
    assert ready["status"] == "ready"
    assert ready["policy"]["source"] == f"file:{shipped_policy}"
