"""The local provider's warm worker: one ``fusionctl worker serve`` daemon that attempts are handed to.

Opt-in (``LocalProvider(warm=True)``, ``FUSIONPLANE_LOCAL_WARM_WORKER=1``).
Everything of the daemon lives in ``state_dir/.warm/`` (0700; the dot keeps
it out of the attempt ids, which never start with one)::

    worker.sock     the daemon's Unix socket (0600)
    worker.log      the daemon's own log (its start, each attempt's start and end, its idle exit)
    start.lock      flock'd while one launch starts the daemon, so two never start two

Each attempt still runs under its own detached wrapper exactly as without
warm mode; the wrapper's worker is ``worker run --spec PATH --via SOCKET``, a
thin client that exits with the attempt's code (docs/worker.md, "Warm local
worker"). So exit codes, cancel and LOST detection are the same; only the
models stay loaded between attempts.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from providers.local_env import worker_environment

__all__ = ["MAX_SOCKET_PATH", "WARM_DIR", "WarmDaemon", "serve_command"]

log = logging.getLogger("fusionplane.providers.local")

WARM_DIR = ".warm"
#: sun_path holds 108 bytes with its terminating NUL
MAX_SOCKET_PATH = 107

# $1 log file, then the daemon's argv: started in the background, so it is no child of ours (no zombie)
_DETACH = r"""
log_file=$1; shift
"$@" </dev/null >>"$log_file" 2>&1 &
echo $!
"""


def serve_command(worker_command: Sequence[str]) -> list[str]:
    """``... worker serve`` from the provider's ``... worker run`` argv prefix; ``ValueError`` for another command."""
    if len(worker_command) < 2 or list(worker_command[-2:]) != ["worker", "run"]:
        raise ValueError("the warm worker needs a worker command that ends in 'worker run' (a fusionctl)")
    return [*worker_command[:-1], "serve"]


def _connectable(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rfind(")") + 2 :][:1] not in ("Z", "X", "")


class WarmDaemon:
    """Starts the daemon when no daemon answers on its socket; never raises (the client falls back)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        command: Sequence[str],
        env: Mapping[str, str],
        pass_env: Sequence[str],
        idle_exit_s: float,
        start_timeout_s: float,
    ) -> None:
        self.directory = state_dir / WARM_DIR
        self.socket_path = self.directory / "worker.sock"
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            raise ValueError(f"warm worker socket path {self.socket_path} is over {MAX_SOCKET_PATH} bytes")
        self.command = list(command)
        self._env = env
        self.pass_env = tuple(pass_env)
        self.idle_exit_s = idle_exit_s
        self.start_timeout_s = start_timeout_s

    def ensure(self) -> None:
        """Make sure a daemon listens on the socket, starting one (bounded wait); log and go on if it can't."""
        if _connectable(self.socket_path):
            return
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            os.chmod(self.directory, 0o700)
            fd = os.open(self.directory / "start.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("", extra={"event": "warm_worker_start_failed", "error": str(exc)})
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not _connectable(self.socket_path):  # another launch may have started it meanwhile
                self._start()
        finally:
            os.close(fd)  # releases the lock

    def _start(self) -> None:
        argv = [*self.command, "--socket", str(self.socket_path), "--idle-exit-s", f"{self.idle_exit_s:g}"]
        env = worker_environment(
            self._env,
            attempt_dir=self.directory,
            spec_path=None,
            pass_env=self.pass_env,
        )
        log_path = self.directory / "worker.log"
        try:
            log_path.touch(mode=0o600, exist_ok=True)
            out = subprocess.run(
                ["sh", "-c", _DETACH, "fusionplane-warm", str(log_path), *argv],
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                start_new_session=True,
                umask=0o077,
                timeout=30,
                check=True,
            )
            pid = int(out.stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            log.warning("", extra={"event": "warm_worker_start_failed", "error": str(exc)})
            return
        # the daemon signals readiness only by listening: poll the socket, as long as it lives
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if _connectable(self.socket_path):
                log.info("", extra={"event": "warm_worker_spawned", "pid": pid})
                return
            if not _alive(pid):
                break
            time.sleep(0.02)
        log.warning("", extra={"event": "warm_worker_start_failed", "error": f"no socket from pid {pid}"})
