"""The warm local worker: one long-lived process that runs many attempts, so their models load once.

``fusionctl worker serve --socket PATH`` listens on a Unix socket (0600, in
a directory that must be ours and 0700). Each connection carries one attempt
(newline-delimited JSON; docs/worker.md, "Warm local worker"):

- client -> daemon: ``{"spec": "/abs/path/spec.json"}``, later perhaps ``{"cancel": true}``;
- daemon -> client: ``{"accepted": true, "pid": N}`` once the attempt runs, its
  log lines as ``{"log": "<json line>"}``, and last ``{"exit_code": N}``.

The daemon reads the spec itself (the loader ``worker run`` uses) and runs
``run_worker`` in a thread per attempt. A dropped connection or a cancel
sets that attempt's stop event, as SIGTERM does for ``worker run``.

``fusionctl worker run --via PATH`` is the client (:func:`run_via`): it exits
with the attempt's code; it returns ``None`` (run in-process instead) when no
daemon took the attempt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlplane.jsonlog import JsonFormatter
from controlplane.worker.agent import run_worker
from controlplane.worker.spec import load_spec
from faceswap import EXIT_INTERNAL, EXIT_PREEMPTED, FaceSwapError

__all__ = ["DEFAULT_IDLE_EXIT_S", "WarmSocketError", "check_socket_dir", "run_via", "serve"]

log = logging.getLogger("fusionplane.warm")
client_log = logging.getLogger("fusionplane.worker")

#: how long the daemon stays up with no attempt running (then a GPU's memory is released)
DEFAULT_IDLE_EXIT_S = 600.0
#: the longest request line the daemon reads (a path and a few keys)
_MAX_REQUEST = 64 << 10
_REQUEST_TIMEOUT_S = 10.0


class WarmSocketError(Exception):
    """The socket's directory is not private to this user: a daemon must not listen there, a client not trust it."""


def check_socket_dir(socket_path: Path) -> None:
    """Raise ``WarmSocketError`` unless the socket's directory is a real directory, ours, mode 0700."""
    directory = socket_path.parent
    try:
        info = os.lstat(directory)
    except OSError as exc:
        raise WarmSocketError(f"{directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise WarmSocketError(f"{directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise WarmSocketError(f"{directory} belongs to uid {info.st_uid}, not to us ({os.geteuid()})")
    if stat.S_IMODE(info.st_mode) != 0o700:
        raise WarmSocketError(f"{directory} has mode {stat.S_IMODE(info.st_mode):04o}, not 0700")


def _send(conn: socket.socket, lock: threading.Lock, message: dict[str, Any]) -> bool:
    data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    with lock:
        try:
            conn.sendall(data)
        except OSError:
            return False
    return True


class _Attempt:
    """One attempt's connection, stop event and log formatter."""

    def __init__(self, conn: socket.socket, *, task_id: str, attempt_id: str) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.attempt_id = attempt_id
        self.formatter = JsonFormatter({"task_id": task_id, "attempt_id": attempt_id})


class _Router(logging.Handler):
    """Sends a record to its attempt's client (the attempt's own log); the rest to the daemon's log.

    The daemon's own ``warm_*`` events go to its log and, when they concern
    an attempt, to that attempt's log too.

    A record belongs to the attempt whose thread logged it; a record from a
    thread of no attempt (a heartbeat, a library) belongs to the one attempt
    running, if only one runs, else to the daemon's log.
    """

    def __init__(self) -> None:
        super().__init__()
        self.attempts: dict[int, _Attempt] = {}  # thread ident -> attempt
        self.local = logging.StreamHandler(sys.stderr)
        self.local.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        attempt = self.attempts.get(record.thread or 0)
        if record.name == log.name:
            self.local.handle(record)  # the daemon's own events: always in its log, and in the attempt's
        elif attempt is None:
            running = list(self.attempts.values())
            if len(running) == 1:
                attempt = running[0]
        if attempt is None:
            if record.name != log.name:
                self.local.handle(record)
            return
        try:
            line = attempt.formatter.format(record)
        except Exception:
            self.handleError(record)
            return
        _send(attempt.conn, attempt.lock, {"log": line})


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _read_line(conn: socket.socket, timeout_s: float) -> bytes | None:
    """One newline-terminated line, or ``None`` on EOF, timeout or an over-long line."""
    conn.settimeout(timeout_s)
    data = b""
    try:
        while b"\n" not in data:
            chunk = conn.recv(4096)
            if not chunk or len(data) + len(chunk) > _MAX_REQUEST:
                return None
            data += chunk
    except OSError:
        return None
    finally:
        conn.settimeout(None)
    return data.split(b"\n", 1)[0]


class _Daemon:
    def __init__(self, socket_path: Path, *, idle_exit_s: float, run: Callable[..., int]) -> None:
        self.socket_path = socket_path
        self.idle_exit_s = idle_exit_s
        self.run = run
        self.router = _Router()
        self.guard = threading.Lock()
        self.running: set[_Attempt] = set()
        self.idle_since = time.monotonic()
        self.shutdown = threading.Event()

    def handle(self, conn: socket.socket) -> None:
        with contextlib.closing(conn):
            if _peer_uid(conn) != os.geteuid():
                log.warning("", extra={"event": "warm_peer_refused"})
                return
            line = _read_line(conn, _REQUEST_TIMEOUT_S)
            if line is None:
                return  # a liveness probe, or a client gone before it asked: nothing ran
            try:
                request = json.loads(line)
                spec_path = Path(request["spec"])
            except (ValueError, KeyError, TypeError):
                _send(conn, threading.Lock(), {"error": "bad request", "exit_code": 2})
                return
            try:
                spec = load_spec(spec_path)
            except FaceSwapError as exc:
                extra = {"event": "spec_invalid", "field": exc.field, "error": exc.message, "exit_code": exc.exit_code}
                _send(conn, threading.Lock(), {"accepted": True, "pid": os.getpid()})
                _send(conn, threading.Lock(), {"log": JsonFormatter().format(_record(logging.ERROR, extra))})
                _send(conn, threading.Lock(), {"exit_code": exc.exit_code})
                return
            attempt = _Attempt(conn, task_id=spec.task_id, attempt_id=spec.attempt_id)
            ids = {"task_id": spec.task_id, "attempt_id": spec.attempt_id}
            with self.guard:
                self.running.add(attempt)
                if self.shutdown.is_set():
                    attempt.stop.set()
            self.router.attempts[threading.get_ident()] = attempt
            try:
                _send(conn, attempt.lock, {"accepted": True, "pid": os.getpid()})
                log.info("", extra={"event": "warm_attempt_started", "worker_pid": os.getpid(), **ids})
                watcher = threading.Thread(target=self._watch, args=(attempt,), daemon=True)
                watcher.start()
                try:
                    code = self.run(spec, stop=attempt.stop)
                except Exception:  # run_worker maps every error; this is the daemon's own last defence
                    log.exception("", extra={"event": "attempt_crashed"})
                    code = EXIT_INTERNAL
                log.info("", extra={"event": "warm_attempt_ended", "exit_code": code, "worker_pid": os.getpid(), **ids})
                _send(conn, attempt.lock, {"exit_code": code})
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)  # wakes the watcher
                watcher.join(timeout=5)
            finally:
                self.router.attempts.pop(threading.get_ident(), None)
                with self.guard:
                    self.running.discard(attempt)
                    if not self.running:
                        self.idle_since = time.monotonic()

    def _watch(self, attempt: _Attempt) -> None:
        """Set the attempt's stop event on a cancel line or when the client goes away."""
        buffered = b""
        while True:
            try:
                chunk = attempt.conn.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                attempt.stop.set()
                return
            buffered = (buffered + chunk)[-_MAX_REQUEST:]
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                with contextlib.suppress(ValueError, AttributeError):
                    if json.loads(line).get("cancel"):
                        attempt.stop.set()

    def loop(self, listener: socket.socket) -> int:
        log.info("", extra={"event": "warm_worker_started", "socket": str(self.socket_path), "pid": os.getpid()})
        while not self.shutdown.is_set():
            readable, _, _ = select.select([listener], [], [], 0.2)
            if readable:
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    conn, _ = listener.accept()
                    conn.setblocking(True)
                    with self.guard:
                        self.idle_since = time.monotonic()
                    threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
                continue
            with self.guard:
                idle = not self.running and time.monotonic() - self.idle_since >= self.idle_exit_s
            if idle:
                # unlink first: a client connecting from now on falls back; one in the backlog sees EOF before
                # "accepted" and falls back too (nothing ran here)
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()
                log.info("", extra={"event": "warm_worker_idle_exit", "idle_s": self.idle_exit_s})
                return 0
        # SIGTERM: stop every attempt (each client gets its code, 75 after a clean stop), then leave
        with self.guard:
            attempts = list(self.running)
        for attempt in attempts:
            attempt.stop.set()
        while True:
            with self.guard:
                if not self.running:
                    break
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        log.info("", extra={"event": "warm_worker_stopped"})
        return EXIT_PREEMPTED if attempts else 0


def _record(level: int, extra: dict[str, Any]) -> logging.LogRecord:
    record = logging.LogRecord("fusionplane.worker", level, __file__, 0, "", None, None)
    record.__dict__.update(extra)
    return record


def _connectable(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def serve(socket_path: Path, *, idle_exit_s: float, shutdown: threading.Event | None = None) -> int:
    """Run the daemon until idle for ``idle_exit_s`` (or ``shutdown`` is set); the process's exit code.

    Raises ``WarmSocketError`` when the directory is not private or the path
    is taken by something other than a stale socket.
    """
    check_socket_dir(socket_path)
    daemon = _Daemon(socket_path, idle_exit_s=idle_exit_s, run=run_worker)
    if shutdown is not None:
        daemon.shutdown = shutdown
    root = logging.getLogger()
    root.handlers[:] = [daemon.router]
    root.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(socket_path)
        if not stat.S_ISSOCK(info.st_mode):
            raise WarmSocketError(f"{socket_path} exists and is not a socket")
        if _connectable(socket_path):
            log.info("", extra={"event": "warm_worker_already_running", "socket": str(socket_path)})
            return 0
        socket_path.unlink()  # a stale socket of a daemon that died
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is created 0600: no window where another user could connect
    try:
        listener.bind(str(socket_path))
    finally:
        os.umask(old_umask)
    os.chmod(socket_path, 0o600)
    listener.listen(64)
    listener.setblocking(False)
    with contextlib.closing(listener):
        return daemon.loop(listener)


def run_via(socket_path: Path, spec_path: Path, *, stop: threading.Event) -> int | None:
    """Run the attempt in the warm daemon: its exit code, or ``None`` when no daemon took it (run it here).

    The daemon's log lines for the attempt are written to stderr, as
    ``worker run`` would. ``stop`` (SIGTERM) sends a cancel and keeps waiting
    for the code. A daemon that dies after it took the attempt gives
    ``EXIT_INTERNAL`` (see the comment below).
    """
    try:
        check_socket_dir(socket_path)
    except WarmSocketError as exc:
        _unavailable(str(exc))
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.closing(conn):
        try:
            conn.connect(str(socket_path))
            conn.sendall(json.dumps({"spec": str(spec_path.resolve())}).encode() + b"\n")
        except OSError as exc:
            _unavailable(exc.strerror or str(exc))
            return None
        accepted = False
        cancel_sent = False
        buffered = b""
        while True:
            if stop.is_set() and not cancel_sent:
                cancel_sent = True
                with contextlib.suppress(OSError):
                    conn.sendall(b'{"cancel":true}\n')
            readable, _, _ = select.select([conn], [], [], 0.1)
            if not readable:
                continue
            try:
                chunk = conn.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                if not accepted:
                    # the daemon closed before it took the attempt (idle exit, a probe race): nothing ran there
                    _unavailable("the warm worker closed the connection before it took the attempt")
                    return None
                # The daemon died mid-attempt: the attempt did not finish and its worker sent no "fail". 70
                # (EX_SOFTWARE, retry class "crash") makes the local provider report FAILED with a documented
                # internal-error reason, which the scheduler retries (bounded) with the same checkpoint; 75
                # would claim a clean SIGTERM stop with a flushed checkpoint, which did not happen, and an
                # undocumented code would read as an unexplained crash.
                client_log.error("", extra={"event": "warm_worker_lost", "exit_code": EXIT_INTERNAL})
                return EXIT_INTERNAL
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                if message.get("accepted"):
                    accepted = True
                if isinstance(message.get("log"), str):
                    print(message["log"], file=sys.stderr, flush=True)
                if isinstance(message.get("exit_code"), int):
                    return int(message["exit_code"])


def _unavailable(reason: str) -> None:
    client_log.warning("", extra={"event": "warm_worker_unavailable", "reason": reason})
