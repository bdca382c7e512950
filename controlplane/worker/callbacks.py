"""Reporting to the control plane: heartbeats, progress, complete, fail.

A callback failure never fails the job: the control plane treats a missing
heartbeat as a lost worker on its own schedule. ``complete`` and ``fail``
are retried a few times because they carry the outcome.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx

from controlplane.worker.spec import CallbackSpec

__all__ = ["Reporter"]

log = logging.getLogger("fusionplane.worker")


class Reporter:
    def __init__(self, spec: CallbackSpec | None, *, timeout_s: float = 5.0) -> None:
        self.spec = spec
        self._client = httpx.Client(timeout=timeout_s) if spec else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_progress = 0.0
        self.state: dict[str, Any] = {}

    def post(self, event: str, body: dict[str, Any], *, attempts: int = 1) -> bool:
        if self.spec is None or self._client is None:
            return False
        url = f"{self.spec.url.rstrip('/')}/{event}"
        headers = {"Authorization": f"Bearer {self.spec.token.get_secret_value()}"}
        for attempt in range(attempts):
            try:
                response = self._client.post(url, json=body, headers=headers)
                if response.status_code < 300:
                    return True
                if response.status_code < 500 and response.status_code != 429:
                    log.warning(
                        "", extra={"event": "callback_rejected", "callback": event, "status": response.status_code}
                    )
                    return False
            except httpx.HTTPError as exc:
                log.warning("", extra={"event": "callback_failed", "callback": event, "error": str(exc)})
            if attempt + 1 < attempts:
                time.sleep(min(0.5 * 2**attempt, 5.0))
        return False

    def progress(self, body: dict[str, Any], *, every_s: float = 1.0) -> None:
        self.state = body
        now = time.monotonic()
        if now - self._last_progress >= every_s:
            self._last_progress = now
            self.post("progress", body)

    def start_heartbeats(self) -> None:
        if self.spec is None:
            return
        interval = self.spec.heartbeat_seconds

        def beat() -> None:
            while not self._stop.wait(interval):
                self.post("heartbeat", {"progress": self.state})

        self.post("heartbeat", {"progress": {}})
        self._thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._client is not None:
            self._client.close()
