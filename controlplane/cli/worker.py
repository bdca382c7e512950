"""``fusionctl worker run --spec SPEC.json``: the container's entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from controlplane.cli.common import install_stop_signals
from controlplane.jsonlog import setup_json_logging
from controlplane.worker import load_spec, run_worker
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
def run(spec_path: Path) -> None:
    """Run one attempt; JSON log lines on stderr; exit code per docs/worker.md."""
    stop = install_stop_signals(interrupt=False)
    try:
        spec = load_spec(spec_path)
    except FaceSwapError as exc:
        setup_json_logging()
        import logging

        logging.getLogger("fusionplane.worker").error(
            "", extra={"event": "spec_invalid", "field": exc.field, "error": exc.message, "exit_code": exc.exit_code}
        )
        sys.exit(exc.exit_code)
    setup_json_logging(static={"task_id": spec.task_id, "attempt_id": spec.attempt_id})
    sys.exit(run_worker(spec, stop=stop))
