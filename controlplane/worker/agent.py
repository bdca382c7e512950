"""Run one attempt from its worker spec and return the documented exit code.

Exit codes (docs/worker.md): 0 done, 65 bad input, 69 model error,
75 preempted (SIGTERM; finished segments checkpointed, safe to resume
elsewhere), 70 internal error.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from controlplane.worker.callbacks import Reporter
from controlplane.worker.spec import WorkerSpec, to_swap_options
from faceswap import EXIT_INTERNAL, EXIT_OK, FaceSwapError, run_swap
from faceswap.models import ModelStore

__all__ = ["run_worker"]

log = logging.getLogger("fusionplane.worker")


def run_worker(spec: WorkerSpec, *, stop: threading.Event, models: ModelStore | None = None) -> int:
    """Run the swap the spec describes; report through its callback; return the exit code."""
    reporter = Reporter(spec.callback)
    started = time.monotonic()
    log.info(
        "",
        extra={
            "event": "attempt_started",
            "source": spec.source,
            "target": spec.target,
            "output": spec.output,
            "swapper": spec.options.swapper,
        },
    )

    def on_event(event: str, fields: dict[str, Any]) -> None:
        if event == "progress":
            reporter.progress(fields)
            return
        log.info("", extra={"event": event, **fields})

    reporter.start_heartbeats()
    try:
        result = run_swap(
            source=spec.source,
            target=spec.target,
            output=spec.output,
            options=to_swap_options(spec.options),
            checkpoint=spec.checkpoint,
            models=models,
            stop=stop,
            on_event=on_event,
        )
    except FaceSwapError as exc:
        body = {"kind": exc.kind, "field": exc.field, "message": exc.message, "exit_code": exc.exit_code}
        # "message" is reserved on a LogRecord, so the log line calls it "error"
        log.error(
            "",
            extra={
                "event": "attempt_failed",
                "kind": exc.kind,
                "field": exc.field,
                "error": exc.message,
                "exit_code": exc.exit_code,
            },
        )
        reporter.post("fail", body, attempts=3)
        reporter.close()
        return exc.exit_code
    except Exception as exc:  # the last line of defence: report, never hang
        log.exception("", extra={"event": "attempt_crashed"})
        reporter.post(
            "fail", {"kind": "internal", "field": None, "message": repr(exc), "exit_code": EXIT_INTERNAL}, attempts=3
        )
        reporter.close()
        return EXIT_INTERNAL
    summary = result.summary()
    summary["wall_s"] = round(time.monotonic() - started, 3)  # the whole attempt, callbacks included
    log.info("", extra={"event": "attempt_succeeded", **summary})
    reporter.post("complete", summary, attempts=3)
    reporter.close()
    return EXIT_OK
