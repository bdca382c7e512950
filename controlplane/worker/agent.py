"""Run one attempt from its worker spec and return the documented exit code.

Exit codes (docs/worker.md): 0 done, 65 bad input, 69 model error,
75 preempted (SIGTERM; finished segments checkpointed, safe to resume
elsewhere) or, for a hedged launch's attempt, not allowed to run (another
attempt of the task won, or no answer in time), 70 internal error.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydantic import ValidationError

from controlplane.domain.callbacks import MAX_FAILURE_MESSAGE, MAX_PROVIDER_REASON, Completion, Failure
from controlplane.worker.callbacks import GO, GO_ENDED, GO_STOPPED, Reporter
from controlplane.worker.spec import WorkerSpec, to_access, to_fetch_rules, to_swap_options
from faceswap import EXIT_INTERNAL, EXIT_OK, EXIT_PREEMPTED, FaceSwapError, run_swap
from faceswap.models import ModelStore

__all__ = ["GO_TIMEOUT_S", "run_worker"]

log = logging.getLogger("fusionplane.worker")

#: how long a hedged launch's worker waits to learn whether it runs before it gives up (exit 75)
GO_TIMEOUT_S = 60.0


def run_worker(
    spec: WorkerSpec, *, stop: threading.Event, models: ModelStore | None = None, go_timeout_s: float = GO_TIMEOUT_S
) -> int:
    """Run the swap the spec describes; report through its callback; return the exit code.

    With ``callback.wait_for_go`` (a hedged launch), nothing is fetched,
    loaded or written before the control plane answers that this attempt
    runs: of a hedged launch's siblings only the winner ever works.
    """
    reporter = Reporter(spec.callback, stop=stop)
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
            reporter.progress(_bounded(fields))
            return
        log.info("", extra={"event": event, **fields})

    waited = spec.callback is not None and spec.callback.wait_for_go
    if waited:
        refused = _wait_for_go(reporter, stop=stop, timeout_s=go_timeout_s)
        if refused is not None:
            reporter.close()
            return refused
    reporter.start_heartbeats(first=not waited)  # the go was a heartbeat already
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
            access=to_access(spec),  # always a grant: a spec without one may use no s3 at all
            fetch_rules=to_fetch_rules(spec),
            blob_endpoints=dict(spec.blob_endpoints),
            s3_endpoints=dict(spec.s3_endpoints),
        )
    except FaceSwapError as exc:
        if reporter.ended is not None:
            # the control plane ended the attempt and the job stopped for it: nothing to report
            log.warning("", extra={"event": "attempt_abandoned", "state": reporter.ended, "exit_code": exc.exit_code})
            reporter.close()
            return exc.exit_code
        body = _failure(kind=exc.kind, field=exc.field, message=exc.message, exit_code=exc.exit_code)
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
            "fail", _failure(kind="internal", field=None, message=repr(exc), exit_code=EXIT_INTERNAL), attempts=3
        )
        reporter.close()
        return EXIT_INTERNAL
    summary = _bounded(result.summary())
    summary["wall_s"] = round(time.monotonic() - started, 3)  # the whole attempt, callbacks included
    log.info("", extra={"event": "attempt_succeeded", **summary})
    try:
        completion = Completion.model_validate(summary)
    except ValidationError:  # the outcome matters more than its details: report it without them
        completion = Completion(output=spec.output)
    reporter.post("complete", completion, attempts=3)
    reporter.close()
    return EXIT_OK


def _wait_for_go(reporter: Reporter, *, stop: threading.Event, timeout_s: float) -> int | None:
    """Wait until the control plane says this hedged attempt runs: None then, else the exit code (75).

    Losing is logged ``hedge_lost`` and reported to no one (the attempt has
    ended already); a SIGTERM meanwhile is an ordinary preemption (``fail``
    kind ``preempted``); no answer in ``timeout_s`` is ``hedge_undecided``
    (``fail`` kind ``temporary``), so the control plane may try again.
    Nothing was fetched or written in any of these cases.
    """
    verdict = reporter.wait_for_go(stop=stop, timeout_s=timeout_s)
    if verdict == GO:
        log.info("", extra={"event": "hedge_won"})
        return None
    if verdict == GO_ENDED:
        log.warning("", extra={"event": "hedge_lost", "state": reporter.ended, "exit_code": EXIT_PREEMPTED})
        return EXIT_PREEMPTED
    if verdict == GO_STOPPED:
        kind, field, message = "preempted", "worker", "stopped by SIGTERM before the hedged launch was decided"
        log.error(
            "",
            extra={
                "event": "attempt_failed",
                "kind": kind,
                "field": field,
                "error": message,
                "exit_code": EXIT_PREEMPTED,
            },
        )
    else:
        kind, field, message = "temporary", "callback", f"no answer within {timeout_s:g} s whether this attempt runs"
        log.error("", extra={"event": "hedge_undecided", "error": message, "exit_code": EXIT_PREEMPTED})
    reporter.post("fail", _failure(kind=kind, field=field, message=message, exit_code=EXIT_PREEMPTED), attempts=3)
    return EXIT_PREEMPTED


def _bounded(fields: dict[str, Any]) -> dict[str, Any]:
    """A report with its provider reason cut to what the API takes: a long dlopen error must not lose the rest."""
    reason = fields.get("execution_provider_reason")
    if isinstance(reason, str) and len(reason) > MAX_PROVIDER_REASON:
        return {**fields, "execution_provider_reason": reason[: MAX_PROVIDER_REASON - 3] + "..."}
    return fields


def _failure(*, kind: str, field: str | None, message: str, exit_code: int) -> Failure:
    """The ``fail`` body, cut to what the API takes (a long ffmpeg message must not lose the outcome)."""
    return Failure(
        kind=kind, field=field[:128] if field else field, message=message[:MAX_FAILURE_MESSAGE], exit_code=exit_code
    )
