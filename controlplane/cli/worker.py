"""``fusionctl worker run --spec SPEC.json``: the container's entry point; ``worker serve``: the warm local worker."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click

from controlplane.cli.common import install_stop_signals
from controlplane.jsonlog import setup_json_logging
from controlplane.worker import load_spec, run_worker
from controlplane.worker.warm import DEFAULT_IDLE_EXIT_S, WarmSocketError, run_via
from controlplane.worker.warm import serve as serve_warm
from faceswap import FaceSwapError

__all__ = ["worker"]


@click.group()
def worker() -> None:
    """The in-container worker agent."""


@worker.command("run")
@click.option(
    "--spec",
    "spec_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="FUSIONPLANE_WORKER_SPEC",
    help="Worker spec JSON [env: FUSIONPLANE_WORKER_SPEC]",
)
@click.option(
    "--via",
    "via",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Hand the attempt to the warm worker listening on this socket (falls back to running it here).",
)
def run(spec_path: Path, via: Path | None) -> None:
    """Run one attempt; JSON log lines on stderr; exit code per docs/worker.md."""
    stop = install_stop_signals(interrupt=False)
    if via is not None:
        setup_json_logging()
        code = run_via(via, spec_path, stop=stop)
        if code is not None:
            _exit_with(code)
    try:
        spec = load_spec(spec_path)
    except FaceSwapError as exc:
        setup_json_logging()
        logging.getLogger("fusionplane.worker").error(
            "", extra={"event": "spec_invalid", "field": exc.field, "error": exc.message, "exit_code": exc.exit_code}
        )
        sys.exit(exc.exit_code)
    setup_json_logging(static={"task_id": spec.task_id, "attempt_id": spec.attempt_id})
    _exit_with(run_worker(spec, stop=stop))


def _exit_with(code: int) -> None:
    """Exit with the attempt's code, deaf to SIGTERM from here on.

    A cancel resends SIGTERM to the attempt's process group every half second
    until it is gone, and while Python shuts down it puts back the default
    handler of every signal it handled: a SIGTERM landing then killed the
    process after its code was decided, and the wrapper recorded 143 instead
    of 75 (seen with the warm worker's client, whose cancel takes a second or
    two). The outcome is decided; an ignored signal is left ignored.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)


@worker.command("serve")
@click.option(
    "--socket",
    "socket_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Unix socket to listen on; its directory must be ours and mode 0700.",
)
@click.option(
    "--idle-exit-s",
    type=click.FloatRange(min=0),
    default=DEFAULT_IDLE_EXIT_S,
    show_default=True,
    help="Exit after this long with no attempt running (releases the GPU's memory).",
)
def serve(socket_path: Path, idle_exit_s: float) -> None:
    """The warm local worker: runs the attempts ``worker run --via`` hands it, models loaded once."""
    shutdown = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: shutdown.set())
    try:
        code = serve_warm(socket_path, idle_exit_s=idle_exit_s, shutdown=shutdown)
    except WarmSocketError as exc:
        setup_json_logging()
        logging.getLogger("fusionplane.warm").error("", extra={"event": "warm_worker_refused", "error": str(exc)})
        sys.exit(2)
    sys.exit(code)
