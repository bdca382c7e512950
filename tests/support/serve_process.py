"""A real ``fusionctl serve`` in its own process, on loopback, with everything it prints kept.

``with served(workdir) as plane:`` starts serve in ``workdir`` (its ``var/``
there: tokens file, dev token, SQLite), waits until ``/healthz`` answers,
and on leaving stops it (SIGINT, then SIGKILL by its PID). ``plane.output()``
is all it wrote to stdout and stderr so far (``workdir/serve.log``).
``insecure_dev`` serves without tokens; ``umask`` starts it under that
umask (serve must tighten what it creates itself); keyword ``env`` entries
override the environment (``FUSIONPLANE_LOCAL_WORKER_COMMAND`` defaults to a
worker that exits at once).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.loopback import free_port

__all__ = ["ServedPlane", "served"]

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ServedPlane:
    url: str
    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def var_dir(self) -> Path:
        return self.workdir / "var"

    @property
    def tokens_file(self) -> Path:
        return self.var_dir / "tokens.json"

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers=headers, timeout=5)


def _environment(overrides: dict[str, str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("FUSIONPLANE_DATABASE_URL", "FUSIONPLANE_TOKENS_FILE", "FUSIONPLANE_VAR_DIR", "CONSUL_HTTP_ADDR")
    }
    env.update(
        {
            "FUSIONPLANE_POLICY_FILE": str(REPO / "policies" / "default.json"),
            "FUSIONPLANE_LOCAL_WORKER_COMMAND": "sh -c 'exit 0'",  # no task runs in these tests
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def served(
    workdir: Path,
    *,
    ready_within_s: float = 60.0,
    insecure_dev: bool = False,
    umask: int | None = None,
    port: int | None = None,
    args: tuple[str, ...] = (),
    **env: str,
) -> Iterator[ServedPlane]:
    """Run ``fusionctl serve`` in ``workdir`` until the block ends; the output log is appended across starts.

    ``port`` when the caller must know it first (a ``FUSIONPLANE_PUBLIC_URL`` naming it); ``args`` are
    more ``serve`` flags."""
    port = port or free_port()
    log_path = workdir / "serve.log"
    argv = [sys.executable, "-m", "controlplane.cli", "serve", "--port", str(port), *args]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*argv, "--insecure-dev"] if insecure_dev else argv,
            cwd=workdir,
            env=_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=-1 if umask is None else umask,
        )
    plane = ServedPlane(url=f"http://127.0.0.1:{port}", workdir=workdir, log_path=log_path, process=process)
    try:
        deadline = time.monotonic() + ready_within_s
        while True:
            assert process.poll() is None, "serve exited:\n" + plane.output()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{plane.url}/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "serve did not answer /healthz\n" + plane.output()
            time.sleep(0.1)
        yield plane
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
