"""Running the API under uvicorn, the same way for ``fusionctl serve`` and the benchmark."""

from __future__ import annotations

import gc
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["run_api", "settle_heap"]

#: gen0 threshold while serving (CPython's default is 2000)
GEN0_THRESHOLD = 10_000


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


def run_api(asgi: Any, *, host: str, port: int) -> None:
    """Serve ``asgi`` until interrupted; uvloop and httptools when installed (they are pinned).

    uvicorn shuts down gracefully on SIGTERM and then raises the signal
    again with the handler it found at start. Python's default for SIGTERM
    kills the process on the spot, so the caller's clean-up (stopping the
    jobs, giving the scheduler lease back) would never run; a handler that
    raises ``SystemExit(143)`` lets it run and still exits as SIGTERM would.
    """
    import uvicorn

    settle_heap()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main else None
    try:
        uvicorn.run(asgi, host=host, port=port, log_level="warning", access_log=False, loop="auto", http="auto")
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
