"""Plain-text output shared by the task commands: aligned tables, key/value fields, progress text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from controlplane.cli.columns import cell, table

__all__ = [
    "ATTEMPT_COLUMNS",
    "attempt_rows",
    "cell",
    "fields",
    "latest_attempt",
    "progress_text",
    "short_version",
    "table",
    "waiting_field",
]


def fields(pairs: Sequence[tuple[str, Any]], *, indent: str = "") -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        click.echo(f"{indent}{key.ljust(width)}  {cell(value)}")


def progress_text(progress: dict[str, Any]) -> str:
    """``frames 40/120  12.5 fps  eta 6s`` from a worker's progress report (missing parts left out)."""
    frames, total = progress.get("frames"), progress.get("total")
    if not isinstance(frames, int):
        return ""
    parts = [f"frames {frames}/{total}" if isinstance(total, int) and total else f"frames {frames}"]
    fps, eta = progress.get("fps"), progress.get("eta_s")
    if isinstance(fps, int | float):
        parts.append(f"{fps:.1f} fps")
    if isinstance(eta, int | float):
        parts.append(f"eta {eta:.0f}s")
    return "  ".join(parts)


def latest_attempt(task: dict[str, Any]) -> dict[str, Any] | None:
    attempts = task.get("attempts") or []
    return attempts[-1] if attempts else None


def short_version(version: str | None) -> str:
    return (version or "-")[:12]


def waiting_field(task: dict[str, Any]) -> list[tuple[str, str]]:
    """``waiting  <reason> since <time>`` for a task waiting for a placement; nothing for any other task."""
    if not task.get("queue_reason"):
        return []
    since = f" since {task['queued_since']}" if task.get("queued_since") else ""
    return [("waiting", f"{task['queue_reason']}{since}")]


def attempt_rows(attempts: Sequence[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            a["number"],
            a["id"],
            a["target"],
            a["provider"],
            a["state"],
            a.get("exit_code"),
            progress_text(a.get("progress") or {}),
            a.get("reason"),
        ]
        for a in attempts
    ]


ATTEMPT_COLUMNS = ["#", "ATTEMPT", "TARGET", "PROVIDER", "STATE", "EXIT", "PROGRESS", "REASON"]
