"""A real ``fusionctl serve --insecure-dev`` in a working directory, for the security tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import REPO
from tests.support.asgi_server import free_port

__all__ = ["serve_process"]


@contextlib.contextmanager
def serve_process(workdir: Path, **env: str) -> Iterator[str]:
    """Yield the URL once ``/readyz`` answers; the log is ``workdir/serve.log``. Started with umask 022."""
    port = free_port()
    environment = {**os.environ, "FUSIONPLANE_POLICY_FILE": str(REPO / "policies" / "default.json"), **env}
    environment.pop("FUSIONPLANE_DATABASE_URL", None)
    environment.pop("FUSIONPLANE_VAR_DIR", None)
    with (workdir / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", "serve", "--port", str(port), "--insecure-dev"],
            cwd=workdir,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            umask=0o022,  # the usual shell umask: files would be 0644 unless serve tightens it
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (workdir / "serve.log").read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, "the control plane did not become ready"
                time.sleep(0.1)
            yield url
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
