"""Reporting to the control plane: heartbeats, progress, complete, fail.

A callback failure never fails the job: the control plane treats a missing
heartbeat as a lost worker on its own schedule. ``complete`` and ``fail``
are retried a few times because they carry the outcome.

One answer does change the job: 409 ``attempt_ended`` says the attempt is
over on the control plane's side (cancelled, or a sibling of its hedged
launch won). The work stops (the ``stop`` event is set) so that an attempt
that is no longer the task's never writes an output.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx
from pydantic import ValidationError

from controlplane.domain.callbacks import Completion, Failure, Heartbeat, Progress, callback_json
from controlplane.worker.spec import CallbackSpec

__all__ = ["GO", "GO_ENDED", "GO_STOPPED", "GO_UNDECIDED", "Reporter"]

log = logging.getLogger("fusionplane.worker")

#: what :meth:`Reporter.wait_for_go` learnt: run, the attempt ended (lost), SIGTERM, or no answer in time
GO, GO_ENDED, GO_STOPPED, GO_UNDECIDED = "go", "ended", "stopped", "undecided"
#: the API's error code for a callback of an attempt that has ended (docs/api.md)
ATTEMPT_ENDED = "attempt_ended"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class Reporter:
    def __init__(
        self, spec: CallbackSpec | None, *, timeout_s: float = 5.0, stop: threading.Event | None = None
    ) -> None:
        self.spec = spec
        self._client = httpx.Client(timeout=timeout_s) if spec else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_progress = 0.0
        #: the job's own stop event: set when the control plane says the attempt has ended
        self._work_stop = stop
        #: the last progress, repeated in every heartbeat
        self.state = Progress()
        #: the attempt's final state once the control plane answered 409 attempt_ended (None until then)
        self.ended: str | None = None

    def _call(self, event: str, body: Heartbeat | Progress | Completion | Failure) -> httpx.Response | None:
        """One POST; its response, or None when it did not get through (logged) or there is no callback."""
        if self.spec is None or self._client is None:
            return None
        url = f"{self.spec.url.rstrip('/')}/{event}"
        headers = {"Authorization": f"Bearer {self.spec.token.get_secret_value()}"}
        try:
            response = self._client.post(url, json=callback_json(body), headers=headers)
        except httpx.HTTPError as exc:
            log.warning("", extra={"event": "callback_failed", "callback": event, "error": str(exc)})
            return None
        if response.status_code == 409:
            error = _json(response).get("error")
            if isinstance(error, dict) and error.get("code") == ATTEMPT_ENDED:
                self._attempt_ended(str(error.get("state", "ended")), str(error.get("message", "")))
        return response

    def _attempt_ended(self, state: str, message: str) -> None:
        """The control plane has ended this attempt: stop the work and the heartbeats, once."""
        if self.ended is not None:
            return
        self.ended = state
        log.warning("", extra={"event": "attempt_ended", "state": state, "error": message})
        self._stop.set()
        if self._work_stop is not None:
            self._work_stop.set()

    def post(self, event: str, body: Heartbeat | Progress | Completion | Failure, *, attempts: int = 1) -> bool:
        """POST one callback (typed as the API parses it); True once it was accepted."""
        if self.spec is None:
            return False
        for attempt in range(attempts):
            response = self._call(event, body)
            if response is not None:
                if response.status_code < 300:
                    return True
                if response.status_code < 500 and response.status_code != 429:
                    if self.ended is None:  # an ended attempt was logged as such already
                        log.warning(
                            "", extra={"event": "callback_rejected", "callback": event, "status": response.status_code}
                        )
                    return False
            if attempt + 1 < attempts:
                time.sleep(min(0.5 * 2**attempt, 5.0))
        return False

    def wait_for_go(self, *, stop: threading.Event, timeout_s: float, retry_s: float = 1.0) -> str:
        """Post heartbeats until the control plane says whether this attempt runs; :data:`GO` when it does.

        A hedged launch's attempt calls this before any work: the first
        heartbeat usually decides (``running``: it won; 409
        ``attempt_ended``: a sibling won, :data:`GO_ENDED`). Unreachable or
        undecided answers are retried every ``retry_s`` for at most
        ``timeout_s`` (:data:`GO_UNDECIDED`); a SIGTERM meanwhile is
        :data:`GO_STOPPED`.
        """
        if self.spec is None:
            return GO_UNDECIDED  # no callback: nobody can say go
        deadline = time.monotonic() + timeout_s
        while True:
            response = self._call("heartbeat", Heartbeat())
            if response is not None and response.status_code < 300 and _json(response).get("state") == "running":
                return GO
            if self.ended is not None:
                return GO_ENDED
            remaining = deadline - time.monotonic()
            if stop.is_set():
                return GO_STOPPED
            if remaining <= 0:
                return GO_UNDECIDED
            if stop.wait(min(retry_s, remaining)):
                return GO_STOPPED

    def progress(self, fields: dict[str, Any], *, every_s: float = 1.0) -> None:
        """Note the job's progress (the core's ``progress`` event); posted at most every ``every_s``."""
        try:
            body = Progress.model_validate(fields)
        except ValidationError as exc:  # a report out of bounds is dropped, never the job
            log.warning("", extra={"event": "progress_dropped", "error": str(exc.errors()[0]["msg"])})
            return
        self.state = body
        now = time.monotonic()
        if now - self._last_progress >= every_s:
            self._last_progress = now
            self.post("progress", body)

    def start_heartbeats(self, *, first: bool = True) -> None:
        """Heartbeat every ``heartbeat_seconds`` from now on (and once at once, unless ``first`` is False)."""
        if self.spec is None:
            return
        interval = self.spec.heartbeat_seconds

        def beat() -> None:
            while not self._stop.wait(interval):
                self.post("heartbeat", Heartbeat(progress=self.state))

        if first:
            self.post("heartbeat", Heartbeat())
        self._thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._client is not None:
            self._client.close()
