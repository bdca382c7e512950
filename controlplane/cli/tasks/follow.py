"""Following a task to its end: ``fusionctl tasks watch`` and ``submit --wait``.

A live rich progress bar on a terminal, one plain line per change otherwise.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from controlplane.cli.client import ApiClient, client_options
from controlplane.cli.tasks.render import latest_attempt, progress_text
from controlplane.cli.tasks.session import FINAL_STATES, api_session, task_path
from controlplane.cli.tasks.wakeup import EventWakeup
from controlplane.domain import TaskState

__all__ = ["BarDisplay", "PlainDisplay", "follow_task", "outcome_line", "result_lines", "watch"]


class PlainDisplay:
    """One line per change of state or progress (logs, pipes, CI)."""

    def __init__(self, *, err: bool) -> None:
        self.err = err
        self.last: str | None = None

    def update(self, task: dict[str, Any]) -> None:
        attempt = latest_attempt(task)
        progress = progress_text(attempt.get("progress") or {}) if attempt else ""
        where = f" on {attempt['target']}" if attempt else ""
        line = f"{task['id']} {task['state']}{where}"
        if progress:
            line += f"  {progress}"
        if task["state"] in FINAL_STATES and task.get("reason"):
            line += f"  ({task['reason']})"
        if line != self.last:
            self.last = line
            click.echo(line, err=self.err)

    def close(self) -> None:
        return None


class BarDisplay:
    """A live rich progress bar: frames done of total, fps and the worker's ETA, and the task's state."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.fields[name]}"),
            TextColumn("{task.fields[state]:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"),
            console=console,
        )
        self.progress.start()
        self.bar: TaskID | None = None

    def update(self, task: dict[str, Any]) -> None:
        attempt = latest_attempt(task)
        progress = (attempt or {}).get("progress") or {}
        raw_frames, raw_total = progress.get("frames"), progress.get("total")
        frames: int = raw_frames if isinstance(raw_frames, int) else 0
        total: int | None = raw_total if isinstance(raw_total, int) and raw_total > 0 else None
        fps, eta = progress.get("fps"), progress.get("eta_s")
        state = task["state"] + (f" @ {attempt['target']}" if attempt else "")
        fields = {
            "name": task["id"],
            "state": state,
            "rate": f"{fps:.1f} fps" if isinstance(fps, int | float) else "",
            "eta": f"eta {eta:.0f}s" if isinstance(eta, int | float) else "",
        }
        if task["state"] == TaskState.SUCCEEDED.value and total is None:
            total = frames = max(frames, 1)  # an image: show a full bar
        if self.bar is None:
            self.bar = self.progress.add_task("task", total=total, completed=frames, **fields)
        else:
            self.progress.update(self.bar, total=total, completed=frames, **fields)

    def close(self) -> None:
        self.progress.stop()


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def follow_task(
    client: ApiClient, task_id: str, *, interval: float, display: PlainDisplay | BarDisplay
) -> dict[str, Any]:
    """Read the task at each of its events (and every ``interval`` for progress) until it is final; its last JSON."""
    wakeup = EventWakeup(client, task_id)
    try:
        while True:
            task: dict[str, Any] = client.get(task_path(task_id))
            display.update(task)
            if task["state"] in FINAL_STATES:
                return task
            wakeup.wait(interval)
    finally:
        wakeup.close()
        display.close()


def outcome_line(task: dict[str, Any]) -> str:
    reason = f": {task['reason']}" if task.get("reason") else ""
    return f"task {task['id']} {task['state']}{reason}"


def result_lines(task: dict[str, Any], *, api_url: str) -> list[str]:
    """Where a succeeded task's result is and how to fetch it; nothing for any other ending."""
    if task["state"] != TaskState.SUCCEEDED.value or not task.get("output_uri"):
        return []
    link = api_url.rstrip("/") + task_path(task["id"], "/output")
    return [f"result: {task['output_uri']}", f"download: fusionctl tasks output {task['id']}  ({link})"]


@click.command("watch")
@click.argument("task_id")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between reads of the progress (state changes come at once, from the event stream).",
)
@client_options
def watch(task_id: str, interval: float, url: str, token: str | None) -> None:
    """Follow a task to its end: a live progress bar (plain lines when stdout is not a terminal).

    Exits 0 if the task succeeded, 1 if it failed or was cancelled.
    """
    with api_session(url, token) as client:
        display: PlainDisplay | BarDisplay = (
            BarDisplay(Console(file=sys.stdout, force_terminal=True))
            if _stdout_is_terminal()
            else PlainDisplay(err=False)
        )
        final = follow_task(client, task_id, interval=interval, display=display)
    click.echo(outcome_line(final))
    for line in result_lines(final, api_url=client.url):
        click.echo(line)
    sys.exit(0 if final["state"] == TaskState.SUCCEEDED.value else 1)
