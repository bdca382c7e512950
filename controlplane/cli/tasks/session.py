"""How the task commands reach the API: one client per command, and the task URLs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import quote

from controlplane.cli.client import ApiClient
from controlplane.domain import TaskState

__all__ = ["FINAL_STATES", "api_session", "task_path"]

FINAL_STATES = frozenset(s.value for s in TaskState if s.is_final)


@contextlib.contextmanager
def api_session(url: str, token: str | None) -> Iterator[ApiClient]:
    """A client for one command, closed when the command is done."""
    client = ApiClient(url, token)
    try:
        yield client
    finally:
        client.close()


def task_path(task_id: str, suffix: str = "") -> str:
    """``/v1/tasks/{id}`` with the id quoted, plus ``suffix`` (``/cancel``, ``/logs``, ``/decision``)."""
    return f"/v1/tasks/{quote(task_id, safe='')}{suffix}"
