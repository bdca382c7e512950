"""``tasks watch`` hears of a task's changes from ``GET /v1/events`` (Server-Sent Events) as they happen.

A thread reads the task's event stream and wakes the follower at each
event, so a state change shows at once instead of at the next poll; the
follower still reads the task every ``--interval`` for the worker's
progress (frames, fps, ETA), which is not an event. Against an API without
the stream, or while it is unreachable, the follower just polls as before.
"""

from __future__ import annotations

import contextlib
import threading

import httpx

from controlplane.cli.client import ApiClient

__all__ = ["EventWakeup"]

#: wait before opening the stream again after it broke
_REOPEN_S = 1.0


class EventWakeup:
    """Wakes :meth:`wait` when the task has a new event; a timeout is the polling fallback."""

    def __init__(self, client: ApiClient, task_id: str) -> None:
        self._client, self._task_id = client, task_id
        self._woke, self._stop = threading.Event(), threading.Event()
        self._last_id: str | None = None
        self._http: httpx.Client | None = None
        self._thread = threading.Thread(target=self._listen, name="events", daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float) -> None:
        """Until the next event, or ``timeout_s``."""
        self._woke.wait(timeout_s)
        self._woke.clear()

    def close(self) -> None:
        self._stop.set()
        if self._http is not None:
            with contextlib.suppress(Exception):  # the reader thread is mid-read: it ends on its own error
                self._http.close()
        self._thread.join(timeout=1.0)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._read_once():
                    return  # no stream on this API: polling alone
            except (httpx.HTTPError, RuntimeError):
                if self._stop.wait(_REOPEN_S):
                    return

    def _read_once(self) -> bool:
        """Read one stream to its end; False when the API has no stream for us."""
        headers = {} if self._last_id is None else {"Last-Event-ID": self._last_id}
        params: dict[str, str | int] = {"task_id": self._task_id}
        if self._last_id is None:
            params["after"] = 0  # from the task's first event: nothing between submit and now is missed
        self._http = self._client.event_stream()
        with self._http, self._http.stream("GET", "/v1/events", params=params, headers=headers) as response:
            if response.status_code != 200:
                return False
            for line in response.iter_lines():
                if self._stop.is_set():
                    return True
                if line.startswith("id: "):
                    self._last_id = line[4:]
                    self._woke.set()
        return True
