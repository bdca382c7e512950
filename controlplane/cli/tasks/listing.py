"""``fusionctl tasks list|show|cancel|logs``: the tasks group and the commands that read one task or many."""

from __future__ import annotations

from typing import Any

import click

from controlplane.cli.client import client_options
from controlplane.cli.common import output_option, print_json
from controlplane.cli.tasks.render import ATTEMPT_COLUMNS, attempt_rows, fields, table, waiting_field
from controlplane.cli.tasks.session import api_session, task_path
from controlplane.domain import DataSensitivity, Priority, TaskState

__all__ = ["tasks"]


@click.group()
def tasks() -> None:
    """List, inspect, cancel and follow tasks."""


_TASK_COLUMNS = ["ID", "STATE", "PRIORITY", "SENSITIVITY", "KIND", "TARGET", "TENANT", "CREATED", "REASON"]


def _task_row(task: dict[str, Any]) -> list[Any]:
    return [
        task["id"],
        task["state"],
        task["priority"],
        task["data_sensitivity"],
        task["kind"],
        task.get("target"),
        task["tenant"],
        task.get("created_at"),
        _why(task),
    ]


def _why(task: dict[str, Any]) -> str | None:
    """A waiting task's queue reason ("waiting: local: no_capacity"), else the task's own reason."""
    if task.get("queue_reason"):
        return f"waiting: {task['queue_reason']}"
    return task.get("reason")


@tasks.command("list")
@click.option("--state", type=click.Choice([s.value for s in TaskState]), default=None)
@click.option("--priority", type=click.Choice([p.value for p in Priority]), default=None)
@click.option("--sensitivity", type=click.Choice([s.value for s in DataSensitivity]), default=None)
@click.option("--target", default=None, help="Tasks placed on this target.")
@click.option("--tenant", default=None, help="Operators: one tenant's tasks (submitters see only their own).")
@click.option("--created-after", default=None, metavar="ISO8601", help="e.g. 2025-01-31T00:00:00Z")
@click.option("--created-before", default=None, metavar="ISO8601")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Tasks per page.")
@click.option("--cursor", default=None, help="The next_cursor of a previous page.")
@click.option("--all", "all_pages", is_flag=True, help="Follow next_cursor to the last page.")
@output_option
@client_options
def list_tasks(
    state: str | None,
    priority: str | None,
    sensitivity: str | None,
    target: str | None,
    tenant: str | None,
    created_after: str | None,
    created_before: str | None,
    limit: int,
    cursor: str | None,
    all_pages: bool,
    output_format: str,
    url: str,
    token: str | None,
) -> None:
    """Tasks, newest first."""
    found: list[dict[str, Any]] = []
    with api_session(url, token) as client:
        while True:
            page = client.get(
                "/v1/tasks",
                state=state,
                priority=priority,
                sensitivity=sensitivity,
                target=target,
                tenant=tenant,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                cursor=cursor,
            )
            found.extend(page["tasks"])
            cursor = page.get("next_cursor")
            if not all_pages or not cursor:
                break
    if output_format == "json":
        print_json({"tasks": found, "next_cursor": cursor})
        return
    table(_TASK_COLUMNS, [_task_row(t) for t in found])
    if cursor:
        click.echo(f"more tasks: --cursor {cursor} (or --all)", err=True)


@tasks.command("show")
@click.argument("task_id")
@output_option
@client_options
def show(task_id: str, output_format: str, url: str, token: str | None) -> None:
    """One task, its attempts and their progress."""
    with api_session(url, token) as client:
        task = client.get(task_path(task_id))
    if output_format == "json":
        print_json(task)
        return
    options = " ".join(f"{k}={v}" for k, v in sorted(task["options"].items()))
    labels = " ".join(f"{k}={v}" for k, v in sorted(task["labels"].items()))
    fields(
        [
            ("id", task["id"]),
            ("tenant", task["tenant"]),
            ("kind", task["kind"]),
            ("state", task["state"]),
            ("reason", task.get("reason")),
            *waiting_field(task),
            ("target", task.get("target")),
            ("priority", task["priority"]),
            ("sensitivity", task["data_sensitivity"]),
            ("deadline", f"{task['deadline_seconds']}s" if task.get("deadline_seconds") else None),
            ("budget", f"${task['budget_usd']:g}" if task.get("budget_usd") is not None else None),
            ("source", task["source_uri"]),
            ("target uri", task["target_uri"]),
            ("output", task["output_uri"]),
            ("options", options),
            ("labels", labels),
            ("created", task.get("created_at")),
            ("updated", task.get("updated_at")),
        ]
    )
    attempts = task.get("attempts") or []
    click.echo("")
    if attempts:
        click.echo("attempts")
        table(ATTEMPT_COLUMNS, attempt_rows(attempts), indent="  ")
    else:
        click.echo("attempts: none yet")


@tasks.command("cancel")
@click.argument("task_id")
@output_option
@client_options
def cancel(task_id: str, output_format: str, url: str, token: str | None) -> None:
    """Cancel a task that has not finished (exit 1 naming its state if it has)."""
    with api_session(url, token) as client:
        task = client.post(task_path(task_id, "/cancel"))
    if output_format == "json":
        print_json(task)
    else:
        click.echo(f"task {task['id']} {task['state']}")


@tasks.command("logs")
@click.argument("task_id")
@client_options
def logs(task_id: str, url: str, token: str | None) -> None:
    """The worker log of the task's latest attempt (providers that keep one, e.g. local)."""
    with api_session(url, token) as client:
        text = client.request("GET", task_path(task_id, "/logs")).text
    click.echo(text, nl=not text.endswith("\n"))
