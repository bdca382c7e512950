"""Running the API under uvicorn, the same way for ``fusionctl serve`` and the benchmark."""

from __future__ import annotations

import errno
import gc
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["ListenError", "listen", "run_api", "settle_heap"]

#: gen0 threshold while serving (CPython's default is 2000)
GEN0_THRESHOLD = 10_000
#: pending connections the kernel queues for us (uvicorn's default)
BACKLOG = 2048
#: uvicorn's exit status when the application did not start
STARTUP_FAILURE = 3


class ListenError(Exception):
    """The control plane cannot listen where it was asked to; the message says why, in the operator's words."""


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` now, before the control plane starts.

    ``fusionctl serve`` calls this before it migrates the database or takes
    the scheduler's lease, so that a busy port fails at once, with nothing
    changed, instead of after both; uvicorn then serves on this socket.
    Connections made while the runtime starts wait in the backlog.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # SO_REUSEADDR (create_server sets it): a restart binds while the last run's connections sit in TIME_WAIT
        return socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:
        raise ListenError(_listen_problem(host, port, exc)) from exc


def _listen_problem(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: the port is already in use (another fusionctl serve?); choose another port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def settle_heap() -> None:
    """Keep the garbage collector's pauses out of request latency.

    Everything allocated at start (FastAPI routes, pydantic validators,
    SQLAlchemy metadata) lives as long as the process, yet every full
    collection walks it again: on a 2-core machine those walks stalled every
    in-flight request for 60-100 ms about once a second under load. Freezing
    the start-up heap takes it out of collection, and a larger gen0
    threshold makes collections rarer; request garbage is short-lived and
    still collected.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_api(asgi: Any, *, host: str, port: int, listener: socket.socket | None = None) -> None:
    """Serve ``asgi`` until interrupted; uvloop and httptools when installed (they are pinned).

    With ``listener`` (from :func:`listen`) uvicorn serves on that socket;
    without, it binds ``host:port`` itself.

    uvicorn shuts down gracefully on SIGTERM and then raises the signal
    again with the handler it found at start. Python's default for SIGTERM
    kills the process on the spot, so the caller's clean-up (stopping the
    jobs, giving the scheduler lease back) would never run; a handler that
    raises ``SystemExit(143)`` lets it run and still exits as SIGTERM would.
    """
    import uvicorn

    config = uvicorn.Config(asgi, host=host, port=port, log_level="warning", access_log=False, loop="auto", http="auto")
    server = uvicorn.Server(config)
    settle_heap()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main else None
    try:
        server.run(sockets=None if listener is None else [listener])
    except KeyboardInterrupt:
        # uvicorn raises the SIGINT it caught again once it has shut down; Ctrl-C is a clean stop (as uvicorn.run)
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    # as uvicorn.run: an application that never started (a bind uvicorn made itself failed) is an error
    if not server.started:
        sys.exit(STARTUP_FAILURE)
