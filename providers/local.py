"""The local provider: the embedded private target, one worker subprocess per attempt.

Everything about an attempt lives in ``state_dir/<attempt_id>/`` so that a
restarted control plane (a new ``LocalProvider`` on the same directory)
knows what runs and what ended::

    meta.json       attempt and task id, written first (the directory is the "tag")
    spec.json       the worker spec, mode 0600 (it holds the callback token)
    process.json    pid, process group, start time (/proc/<pid>/stat field 22), boot id
    worker.log      the worker's stdout and stderr
    exit_code       the worker's exit status, written atomically by a tiny sh wrapper
    cancelled       present once the control plane cancelled the attempt

The worker runs under ``sh`` in its own session and process group. The
wrapper is started detached (the launching shell exits at once), so it is
not a child of the control plane: it outlives a control-plane restart and
leaves no zombie behind. The wrapper runs the worker, then writes its exit
code to ``exit_code.tmp`` and renames it into place.

Outcomes (``status``):

- ``exit_code`` present: 0 -> SUCCEEDED; 75 -> PREEMPTED; 2, 65, 69, 70 and
  any other code -> FAILED with the code's meaning; 128+N (killed by signal
  N, e.g. 137 after SIGKILL or the OOM killer) -> LOST, as docs/worker.md
  says to treat a killed worker. After ``cancel`` a non-zero outcome is
  reported FAILED, reason "cancelled ..." (the scheduler must not retry it).
- no ``exit_code``, wrapper alive (same pid, start time and boot) -> RUNNING.
- no ``exit_code``, wrapper gone -> LOST (killed with its whole group, host
  rebooted). After ``cancel`` -> FAILED "cancelled".
- an attempt id this provider has no directory for -> LOST, reason
  "unknown attempt" (reconciliation treats it as gone; never an error).

Launches are serialised by a lock within one process; one control plane (the
scheduler leader) owns a state directory.

With ``warm=True`` the wrapper's worker is the thin client ``worker run
--spec PATH --via SOCKET`` of one long-lived ``worker serve`` daemon
(providers/local_warm.py), which keeps the models loaded between attempts;
everything above holds unchanged, the client exiting with the attempt's code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.domain import Candidate, InsufficientCapacity, InvalidSpec, Target, Unavailable
from controlplane.domain.exit_codes import EXIT_PREEMPTED
from providers.base import (
    BackendState,
    BackendStatus,
    Capacity,
    LaunchRequest,
    LaunchResult,
    OwnedResource,
    Quote,
)
from providers.common import ATTEMPT_ID, EXIT_MEANINGS
from providers.local_env import NEVER_PASSED, worker_environment
from providers.local_warm import WarmDaemon, serve_command

__all__ = ["EXIT_MEANINGS", "LocalProvider"]


# $1 exit file, $2 log file, then the worker argv. The outer shell starts the wrapper in the
# background and prints its pid; the wrapper traps TERM/INT so that it survives the group-wide
# SIGTERM of a cancel and still records how the worker ended (a caught signal is reset to the
# default in the worker it execs, so the worker gets SIGTERM normally).
_LAUNCHER = r"""
exit_file=$1; log_file=$2; shift 2
sh -c 'trap : TERM INT; "$@"; code=$?; printf "%s\n" "$code" > "$0.tmp" && mv -f "$0.tmp" "$0"' \
    "$exit_file" "$@" </dev/null >>"$log_file" 2>&1 &
echo $!
"""


@dataclass(frozen=True)
class _Process:
    pid: int
    pgid: int
    start_time: str | None
    boot_id: str | None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on; ``None`` if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name (field 2) is in parentheses and may itself hold spaces or parentheses
    return raw[raw.rfind(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None  # field 22 overall


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None and len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _exit_reason(code: int) -> str:
    if code in EXIT_MEANINGS:
        return f"worker exited {code} ({EXIT_MEANINGS[code]})"
    if code > 128:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        return f"worker killed by {name} (exit {code})"
    return f"worker exited {code} (not a documented exit code: an unhandled crash)"


class LocalProvider:
    """Runs ``fusionctl worker run --spec PATH`` as a subprocess per attempt, up to ``slots`` at once.

    ``worker_command`` is the argv prefix (default: this interpreter running
    ``controlplane.cli worker run``); the provider appends ``--spec PATH`` and
    also sets ``FUSIONPLANE_WORKER_SPEC``. ``cancel`` sends SIGTERM to the
    attempt's process group, waits up to ``term_grace_seconds``, then SIGKILL.

    The worker never inherits the control plane's environment: it gets the
    minimal one of :func:`providers.local_env.worker_environment`, picked
    from ``env`` (default ``os.environ``), plus the variables named in
    ``pass_env`` (``FUSIONPLANE_LOCAL_WORKER_ENV``), with ``HOME`` set to
    the attempt's own folder.

    ``warm=True`` hands each attempt to one long-lived ``worker serve``
    daemon (started on demand, gone after ``warm_idle_exit_s`` idle), so a
    second attempt finds its models loaded; see providers/local_warm.py.
    """

    name = "local"

    def __init__(
        self,
        state_dir: Path,
        slots: int,
        worker_command: list[str] | None = None,
        *,
        term_grace_seconds: float = 30.0,
        env: Mapping[str, str] | None = None,
        pass_env: Sequence[str] = (),
        warm: bool = False,
        warm_idle_exit_s: float = 600.0,
        warm_start_timeout_s: float = 60.0,
    ) -> None:
        if slots < 0:
            raise ValueError("slots must be >= 0")
        # absolute: the worker is started with its attempt folder as cwd, so a relative
        # path would point the log and exit-code files somewhere else and lose them
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.slots = slots
        self.worker_command = (
            list(worker_command)
            if worker_command is not None
            else [sys.executable, "-m", "controlplane.cli", "worker", "run"]
        )
        self.term_grace_seconds = term_grace_seconds
        self._env = dict(env) if env is not None else None
        bad = [name for name in pass_env if name in NEVER_PASSED]
        if bad:
            raise ValueError(f"pass_env: {', '.join(bad)} is the control plane's own secret, never a worker's")
        self.pass_env = tuple(pass_env)
        #: the warm worker's daemon (``warm=True``); None: a full worker per attempt
        self.warm: WarmDaemon | None = (
            WarmDaemon(
                self.state_dir,
                command=serve_command(self.worker_command),
                # the provider's environment as it is now: the daemon starts later, its workers' settings from here
                env=dict(os.environ) if self._env is None else self._env,
                pass_env=self.pass_env,
                idle_exit_s=warm_idle_exit_s,
                start_timeout_s=warm_start_timeout_s,
            )
            if warm
            else None
        )
        self._lock = threading.RLock()
        self._boot = _boot_id()
        #: attempts whose exit code was read once: final for good, never read again when counting slots
        self._ended: set[str] = set()

    # -- paths and records ---------------------------------------------------------------------

    def _dir(self, attempt_id: str) -> Path | None:
        if not ATTEMPT_ID.match(attempt_id):
            return None
        return self.state_dir / attempt_id

    def logs(self, attempt_id: str) -> Path:
        """Path of the attempt's ``worker.log``; ``FileNotFoundError`` for an attempt never launched here."""
        directory = self._dir(attempt_id)
        if directory is None or not directory.is_dir():
            raise FileNotFoundError(f"no local attempt {attempt_id!r}")
        return directory / "worker.log"

    def _process(self, directory: Path) -> _Process | None:
        try:
            raw = json.loads((directory / "process.json").read_text())
            return _Process(int(raw["pid"]), int(raw["pgid"]), raw.get("start_time"), raw.get("boot_id"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _exit_code(self, directory: Path) -> int | None:
        try:
            return int((directory / "exit_code").read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_running(self, proc: _Process) -> bool:
        if self._boot is not None and proc.boot_id is not None and proc.boot_id != self._boot:
            return False
        if not _alive(proc.pid):
            return False
        # a recycled pid has another start time
        return proc.start_time is None or _start_time(proc.pid) == proc.start_time

    def _find_orphan(self, directory: Path) -> _Process | None:
        """A wrapper started for this attempt whose process.json never got written (crash mid-launch)."""
        needle = str(directory / "exit_code").encode()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline.split(b"\0") and _alive(int(entry.name)):
                pid = int(entry.name)
                fields = _stat(pid)
                if fields is None:
                    continue
                return _Process(pid, int(fields[2]), _start_time(pid), self._boot)
        return None

    def _record(self, directory: Path, proc: _Process) -> None:
        body = {"pid": proc.pid, "pgid": proc.pgid, "start_time": proc.start_time, "boot_id": proc.boot_id}
        _write_atomic(directory / "process.json", json.dumps(body).encode())

    # -- the contract -------------------------------------------------------------------------

    def capacity(self, target: Target) -> Capacity:
        """Free and total worker slots of this machine (``target`` is the one local target)."""
        with self._lock:
            running = len(self._running())
        return Capacity(free=max(self.slots - running, 0), total=self.slots)

    def quote(self, candidate: Candidate) -> Quote:
        """Owned capacity: no hourly price."""
        return Quote(usd_per_hour=None)

    def _running(self) -> list[str]:
        running = []
        for entry in sorted(os.scandir(self.state_dir), key=lambda e: e.name):
            # an exit code, once written, never changes: after a burst the folder holds hundreds of ended
            # attempts, and reading each one's files on every capacity question made placing crawl
            if entry.name in self._ended or not entry.is_dir():
                continue
            directory = Path(entry.path)
            if self._exit_code(directory) is not None:
                self._ended.add(entry.name)
                continue
            proc = self._process(directory)
            if proc is not None and self._is_running(proc):
                running.append(entry.name)
        return running

    def launch(self, request: LaunchRequest) -> LaunchResult:
        """Start the worker for the attempt, or adopt the one already started (or finished).

        Raises ``InvalidSpec`` for a bad attempt id or worker spec,
        ``InsufficientCapacity`` when every slot is taken, ``Unavailable``
        when the process cannot be started.
        """
        directory = self._dir(request.attempt_id)
        if directory is None:
            raise InvalidSpec(f"attempt id {request.attempt_id!r} is not a valid name", target=self.name)

        with self._lock:
            if directory.is_dir():
                adopted = self._adopt(directory)
                if adopted is not None:
                    return adopted
            running = self._running()
            if len(running) >= self.slots:
                raise InsufficientCapacity(
                    f"all {self.slots} local slots are busy ({', '.join(running) or 'none'})", target=self.name
                )
            directory.mkdir(mode=0o700, exist_ok=True)
            meta = {"attempt_id": request.attempt_id, "task_id": request.task_id}
            _write_atomic(directory / "meta.json", json.dumps(meta).encode())
            spec_path = directory / "spec.json"
            _write_atomic(spec_path, json.dumps(request.worker_spec.wire_document()).encode(), mode=0o600)
            os.chmod(spec_path, 0o600)
            proc = self._start(directory, spec_path)
            self._record(directory, proc)
            return LaunchResult(backend_ref=f"pid:{proc.pid}", adopted=False)

    def _adopt(self, directory: Path) -> LaunchResult | None:
        proc = self._process(directory)
        if self._exit_code(directory) is not None:
            ref = f"pid:{proc.pid}" if proc is not None else f"local:{directory.name}"
            return LaunchResult(backend_ref=ref, adopted=True)
        if proc is not None and self._is_running(proc):
            return LaunchResult(backend_ref=f"pid:{proc.pid}", adopted=True)
        if proc is None:
            orphan = self._find_orphan(directory)
            if orphan is not None:
                self._record(directory, orphan)
                return LaunchResult(backend_ref=f"pid:{orphan.pid}", adopted=True)
            return None  # never started: start it now
        # it ran and vanished without an outcome: that attempt is lost, never start it twice
        return LaunchResult(backend_ref=f"pid:{proc.pid}", adopted=True)

    def _start(self, directory: Path, spec_path: Path) -> _Process:
        argv = [*self.worker_command, "--spec", str(spec_path)]
        if self.warm is not None:
            self.warm.ensure()  # never raises: without a daemon the client runs the attempt itself
            argv += ["--via", str(self.warm.socket_path)]
        env = worker_environment(
            os.environ if self._env is None else self._env,
            attempt_dir=directory,
            spec_path=spec_path,
            pass_env=self.pass_env,
        )
        log_path = directory / "worker.log"
        log_path.touch(mode=0o600, exist_ok=True)
        try:
            launcher = subprocess.Popen(
                ["sh", "-c", _LAUNCHER, "fusionplane-launch", str(directory / "exit_code"), str(log_path), *argv],
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                # outputs, checkpoints and logs the worker writes are this user's only, whatever our umask
                umask=0o077,
            )
        except OSError as exc:
            raise Unavailable(f"cannot start the local worker: {exc}", target=self.name) from exc
        # the launcher is the session and group leader, so its pid is the group id of the worker
        pgid = launcher.pid
        try:
            out, err = launcher.communicate(timeout=30)
        except subprocess.TimeoutExpired as exc:
            launcher.kill()
            launcher.communicate()
            raise Unavailable("the local worker launcher hung", target=self.name) from exc
        try:
            pid = int(out.strip())
        except ValueError as exc:
            detail = err.decode(errors="replace").strip()
            raise Unavailable(f"cannot start the local worker: {detail or 'no pid'}", target=self.name) from exc
        return _Process(pid, pgid, _start_time(pid), self._boot)

    def status(self, attempt_id: str) -> BackendStatus:
        """RUNNING, the recorded outcome, or LOST (see the module docstring)."""
        directory = self._dir(attempt_id)
        if directory is None or not directory.is_dir():
            return BackendStatus(state=BackendState.LOST, reason="unknown attempt: never launched here")
        cancelled = (directory / "cancelled").exists()
        code = self._exit_code(directory)
        if code is not None:
            if code == 0:
                return BackendStatus(state=BackendState.SUCCEEDED, exit_code=0)
            if cancelled:
                return BackendStatus(
                    state=BackendState.FAILED, reason=f"cancelled; {_exit_reason(code)}", exit_code=code
                )
            if code == EXIT_PREEMPTED:
                return BackendStatus(state=BackendState.PREEMPTED, reason=_exit_reason(code), exit_code=code)
            if code > 128:
                return BackendStatus(state=BackendState.LOST, reason=_exit_reason(code), exit_code=code)
            return BackendStatus(state=BackendState.FAILED, reason=_exit_reason(code), exit_code=code)
        proc = self._process(directory)
        if proc is None:
            proc = self._find_orphan(directory)
            if proc is None:
                return BackendStatus(state=BackendState.LOST, reason="the worker was never started")
        if self._is_running(proc):
            return BackendStatus(state=BackendState.RUNNING)
        # the wrapper may have finished between the two reads
        code = self._exit_code(directory)
        if code is not None:
            return self.status(attempt_id)
        if cancelled:
            return BackendStatus(state=BackendState.FAILED, reason="cancelled; the worker was killed")
        return BackendStatus(state=BackendState.LOST, reason="the worker is gone and recorded no exit code")

    def cancel(self, attempt_id: str) -> None:
        """SIGTERM the attempt's process group, wait, then SIGKILL. Unknown or finished: nothing to do."""
        directory = self._dir(attempt_id)
        if directory is None or not directory.is_dir():
            return
        with self._lock:
            proc = self._process(directory) or self._find_orphan(directory)
            if proc is None:
                return
            members = self._members(proc)
            if not members:
                return
            (directory / "cancelled").touch(exist_ok=True)
            if self._wait_gone(proc, self.term_grace_seconds, resend=signal.SIGTERM):
                return
            self._signal_group(proc.pgid, signal.SIGKILL)
            if not self._wait_gone(proc, 5.0):
                raise Unavailable(f"attempt {attempt_id}: processes {members} survived SIGKILL", target=self.name)

    def _members(self, proc: _Process) -> list[int]:
        # group ids are not reused while the group has members, so the members are ours
        if self._boot is not None and proc.boot_id is not None and proc.boot_id != self._boot:
            return []
        return _group_members(proc.pgid)

    @staticmethod
    def _signal_group(pgid: int, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signum)

    def _wait_gone(self, proc: _Process, seconds: float, resend: signal.Signals | None = None) -> bool:
        """Wait for the group to end, sending ``resend`` now and every half second.

        Repeating SIGTERM covers a worker caught between fork and exec when the
        first one arrived (it inherited the wrapper's trap and swallowed it).
        """
        deadline = time.monotonic() + seconds
        next_send = 0.0
        while True:
            if not self._members(proc):
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            if resend is not None and now >= next_send:
                self._signal_group(proc.pgid, resend)
                next_send = now + 0.5
            time.sleep(0.02)

    def list_owned(self) -> list[OwnedResource]:
        """Every attempt directory under ``state_dir``, with its current state."""
        owned = []
        for entry in sorted(os.scandir(self.state_dir), key=lambda e: e.name):
            if not entry.is_dir() or not ATTEMPT_ID.match(entry.name):
                continue
            directory = Path(entry.path)
            meta = _read_json(directory / "meta.json")
            proc = self._process(directory)
            owned.append(
                OwnedResource(
                    attempt_id=entry.name,
                    task_id=str(meta.get("task_id", "")),
                    backend_ref=f"pid:{proc.pid}" if proc is not None else f"local:{entry.name}",
                    state=self.status(entry.name).state,
                )
            )
        return owned


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
