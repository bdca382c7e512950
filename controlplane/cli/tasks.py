"""``fusionctl submit``, ``fusionctl tasks ...`` and ``fusionctl explain``: the REST API from a shell.

Every command talks to the API through :class:`ApiClient` (``--url``/``--token``
or ``FUSIONPLANE_URL``/``FUSIONPLANE_TOKEN``). API errors print one line and
exit 1, an unreachable API exits 3, usage errors exit 2. ``--output json``
prints the API's own JSON (docs/cli.md documents it), sorted and indented.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import quote

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from controlplane.cli.client import ApiClient, client_options
from controlplane.cli.common import output_option, print_json
from controlplane.domain import DataSensitivity, Priority, TaskKind, TaskState
from controlplane.domain.worker_spec import SpecOptions

__all__ = ["COMMANDS", "explain", "submit", "tasks"]

FINAL_STATES = frozenset(s.value for s in TaskState if s.is_final)
UPLOAD_CHUNK_BYTES = 1 << 20
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_NAME = 128
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _choices(field: str) -> list[str]:
    """The values a worker-spec option allows (its ``Literal``), so the CLI never drifts from the API."""
    annotation = SpecOptions.model_fields[field].annotation
    return [str(value) for value in get_args(annotation)]


@contextlib.contextmanager
def _api(url: str, token: str | None) -> Iterator[ApiClient]:
    client = ApiClient(url, token)
    try:
        yield client
    finally:
        client.close()


def _task_path(task_id: str, suffix: str = "") -> str:
    return f"/v1/tasks/{quote(task_id, safe='')}{suffix}"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, indent: str = "") -> None:
    """Plain aligned columns (no colours, no wrapping): readable and easy to grep."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        click.echo(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _fields(pairs: Sequence[tuple[str, Any]], *, indent: str = "") -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        click.echo(f"{indent}{key.ljust(width)}  {_cell(value)}")


def _progress_text(progress: dict[str, Any]) -> str:
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


def _latest_attempt(task: dict[str, Any]) -> dict[str, Any] | None:
    attempts = task.get("attempts") or []
    return attempts[-1] if attempts else None


def _short_version(version: str | None) -> str:
    return (version or "-")[:12]


# --------------------------------------------------------------------------- following a task


class _PlainDisplay:
    """One line per change of state or progress (logs, pipes, CI)."""

    def __init__(self, *, err: bool) -> None:
        self.err = err
        self.last: str | None = None

    def update(self, task: dict[str, Any]) -> None:
        attempt = _latest_attempt(task)
        progress = _progress_text(attempt.get("progress") or {}) if attempt else ""
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


class _BarDisplay:
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
        attempt = _latest_attempt(task)
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


def _follow(
    client: ApiClient, task_id: str, *, interval: float, display: _PlainDisplay | _BarDisplay
) -> dict[str, Any]:
    """Poll the task until it is final; returns its last JSON."""
    try:
        while True:
            task: dict[str, Any] = client.get(_task_path(task_id))
            display.update(task)
            if task["state"] in FINAL_STATES:
                return task
            time.sleep(interval)
    finally:
        display.close()


def _outcome(task: dict[str, Any]) -> str:
    reason = f": {task['reason']}" if task.get("reason") else ""
    return f"task {task['id']} {task['state']}{reason}"


# --------------------------------------------------------------------------- submit


def _upload_name(path: Path) -> str:
    """The basename made safe for ``PUT /v1/uploads/{name}`` (letters, digits, '.', '_', '-')."""
    name = _UNSAFE_NAME_CHARS.sub("_", path.name).lstrip(".") or "upload"
    if len(name) > _MAX_NAME:
        suffix = path.suffix if _UNSAFE_NAME_CHARS.search(path.suffix) is None else ""
        name = name[: _MAX_NAME - len(suffix)] + suffix
    return name


def _is_local_file(value: str) -> bool:
    return _URI.match(value) is None and Path(value).expanduser().exists()


def _upload(client: ApiClient, value: str, *, option: str) -> str:
    """Send a local file to the API and return the URI it is stored under; URIs pass through."""
    if not _is_local_file(value):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise click.BadParameter(f"{value} is not a file", param_hint=option)
    size = path.stat().st_size

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as handle:
            while chunk := handle.read(UPLOAD_CHUNK_BYTES):
                yield chunk

    response = client.request(
        "PUT",
        f"/v1/uploads/{quote(_upload_name(path), safe='')}",
        content=chunks(),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
    )
    return str(response.json()["uri"])


def _labels(values: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = value
    return labels


@click.command()
@click.option("--source", required=True, help="The face to put in: a local file (uploaded) or a URI.")
@click.option("--target", required=True, help="The image or video to change: a local file (uploaded) or a URI.")
@click.option("--output", "output_uri", default=None, help="Where to write (s3:// or under the output root).")
@click.option("--kind", type=click.Choice([k.value for k in TaskKind]), default=None, help="Default: from --target.")
@click.option("--swapper", type=click.Choice(_choices("swapper")), default=None)
@click.option("--face-selector", default=None, help="all, largest, or index:N (left to right).")
@click.option("--execution-provider", type=click.Choice(_choices("execution_provider")), default=None)
@click.option("--encoder", type=click.Choice(_choices("encoder")), default=None, help="Video encoder.")
@click.option("--quality", type=click.IntRange(0, 51), default=None, help="Video CRF/CQ.")
@click.option("--priority", type=click.Choice([p.value for p in Priority]), default=None, help="Default: normal.")
@click.option(
    "--sensitivity",
    type=click.Choice([s.value for s in DataSensitivity]),
    default=None,
    help="private tasks only ever run on private targets. Default: internal.",
)
@click.option("--deadline", type=click.IntRange(min=1), default=None, metavar="SECONDS", help="Finish within.")
@click.option("--budget", type=click.FloatRange(min=0), default=None, metavar="USD", help="Spend at most.")
@click.option("--label", "label_items", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--idempotency-key", default=None, help="Retrying with the same key and body returns the same task.")
@click.option("--wait", is_flag=True, help="Follow the task until it ends; exit 0 if it succeeded, else 1.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True, help="--wait polling.")
@click.option(
    "-o",
    "--output-format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format (--output is the result's URI here).",
)
@client_options
def submit(
    source: str,
    target: str,
    output_uri: str | None,
    kind: str | None,
    swapper: str | None,
    face_selector: str | None,
    execution_provider: str | None,
    encoder: str | None,
    quality: int | None,
    priority: str | None,
    sensitivity: str | None,
    deadline: int | None,
    budget: float | None,
    label_items: tuple[str, ...],
    idempotency_key: str | None,
    wait: bool,
    interval: float,
    output_format: Literal["table", "json"],
    url: str,
    token: str | None,
) -> None:
    """Queue a face-swap task; local files are uploaded first.

    Prints the task's id, state and URL (or its JSON with -o json). With
    --wait, follows it to the end (progress on stderr) and exits 0 only if it
    succeeded.
    """
    labels = _labels(label_items)
    options = {
        k: v
        for k, v in {
            "swapper": swapper,
            "face_selector": face_selector,
            "execution_provider": execution_provider,
            "encoder": encoder,
            "quality": quality,
        }.items()
        if v is not None
    }
    with _api(url, token) as client:
        body: dict[str, Any] = {
            "source": _upload(client, source, option="--source"),
            "target": _upload(client, target, option="--target"),
        }
        optional = {
            "output": output_uri,
            "kind": kind,
            "priority": priority,
            "data_sensitivity": sensitivity,
            "deadline_seconds": deadline,
            "budget_usd": budget,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if options:
            body["options"] = options
        if labels:
            body["labels"] = labels
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = client.request("POST", "/v1/tasks", json=body, headers=headers)
        task: dict[str, Any] = response.json()
        location = client.url + response.headers.get("location", _task_path(task["id"]))
        if not wait:
            if output_format == "json":
                print_json(task)
            else:
                _table(["ID", "STATE", "LOCATION"], [[task["id"], task["state"], location]])
            return
        if output_format == "table":
            _table(["ID", "STATE", "LOCATION"], [[task["id"], task["state"], location]])
        final = _follow(client, task["id"], interval=interval, display=_PlainDisplay(err=True))
    if output_format == "json":
        print_json(final)
    else:
        click.echo(_outcome(final))
    sys.exit(0 if final["state"] == TaskState.SUCCEEDED.value else 1)


# --------------------------------------------------------------------------- tasks


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


def _waiting_field(task: dict[str, Any]) -> list[tuple[str, str]]:
    """``waiting  <reason> since <time>`` for a task waiting for a placement; nothing for any other task."""
    if not task.get("queue_reason"):
        return []
    since = f" since {task['queued_since']}" if task.get("queued_since") else ""
    return [("waiting", f"{task['queue_reason']}{since}")]


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
    with _api(url, token) as client:
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
    _table(_TASK_COLUMNS, [_task_row(t) for t in found])
    if cursor:
        click.echo(f"more tasks: --cursor {cursor} (or --all)", err=True)


def _attempt_rows(attempts: Sequence[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            a["number"],
            a["id"],
            a["target"],
            a["provider"],
            a["state"],
            a.get("exit_code"),
            _progress_text(a.get("progress") or {}),
            a.get("reason"),
        ]
        for a in attempts
    ]


_ATTEMPT_COLUMNS = ["#", "ATTEMPT", "TARGET", "PROVIDER", "STATE", "EXIT", "PROGRESS", "REASON"]


@tasks.command("show")
@click.argument("task_id")
@output_option
@client_options
def show(task_id: str, output_format: str, url: str, token: str | None) -> None:
    """One task, its attempts and their progress."""
    with _api(url, token) as client:
        task = client.get(_task_path(task_id))
    if output_format == "json":
        print_json(task)
        return
    options = " ".join(f"{k}={v}" for k, v in sorted(task["options"].items()))
    labels = " ".join(f"{k}={v}" for k, v in sorted(task["labels"].items()))
    _fields(
        [
            ("id", task["id"]),
            ("tenant", task["tenant"]),
            ("kind", task["kind"]),
            ("state", task["state"]),
            ("reason", task.get("reason")),
            *_waiting_field(task),
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
        _table(_ATTEMPT_COLUMNS, _attempt_rows(attempts), indent="  ")
    else:
        click.echo("attempts: none yet")


@tasks.command("cancel")
@click.argument("task_id")
@output_option
@client_options
def cancel(task_id: str, output_format: str, url: str, token: str | None) -> None:
    """Cancel a task that has not finished (exit 1 naming its state if it has)."""
    with _api(url, token) as client:
        task = client.post(_task_path(task_id, "/cancel"))
    if output_format == "json":
        print_json(task)
    else:
        click.echo(f"task {task['id']} {task['state']}")


@tasks.command("logs")
@click.argument("task_id")
@client_options
def logs(task_id: str, url: str, token: str | None) -> None:
    """The worker log of the task's latest attempt (providers that keep one, e.g. local)."""
    with _api(url, token) as client:
        text = client.request("GET", _task_path(task_id, "/logs")).text
    click.echo(text, nl=not text.endswith("\n"))


@tasks.command("watch")
@click.argument("task_id")
@click.option(
    "--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True, help="Seconds between polls."
)
@client_options
def watch(task_id: str, interval: float, url: str, token: str | None) -> None:
    """Follow a task to its end: a live progress bar (plain lines when stdout is not a terminal).

    Exits 0 if the task succeeded, 1 if it failed or was cancelled.
    """
    with _api(url, token) as client:
        display: _PlainDisplay | _BarDisplay = (
            _BarDisplay(Console(file=sys.stdout, force_terminal=True))
            if _stdout_is_terminal()
            else _PlainDisplay(err=False)
        )
        final = _follow(client, task_id, interval=interval, display=display)
    click.echo(_outcome(final))
    sys.exit(0 if final["state"] == TaskState.SUCCEEDED.value else 1)


# --------------------------------------------------------------------------- explain


def _signal_text(signal: dict[str, Any]) -> list[Any]:
    mark = "MISSING" if signal.get("missing") else "STALE" if signal.get("stale") else "fresh"
    age = signal.get("age_seconds")
    ttl = signal.get("ttl_seconds")
    return [
        signal.get("value"),
        f"{age:g}s" if isinstance(age, int | float) else None,
        f"{ttl:g}s" if isinstance(ttl, int | float) else None,
        mark,
    ]


def _money(value: Any) -> str | None:
    return f"${value:g}/h" if isinstance(value, int | float) else None


def _explain_decision(number: int, count: int, plan: dict[str, Any]) -> None:
    click.echo(f"decision {number} of {count}")
    _fields(
        [("policy version", _short_version(plan.get("policy_version"))), ("decided at", plan.get("decided_at"))],
        indent="  ",
    )
    signals = plan.get("signals_used") or {}
    if signals:
        click.echo("  signals used")
        rows = [
            [key, *_signal_text(value if isinstance(value, dict) else {"value": value})]
            for key, value in signals.items()
        ]
        _table(["SIGNAL", "VALUE", "AGE", "TTL", ""], sorted(rows, key=lambda r: str(r[0])), indent="    ")
    else:
        click.echo("  signals used: none")
    candidates = plan.get("candidates") or []
    if candidates:
        click.echo("  candidates (in order)")
        for rank, c in enumerate(candidates, 1):
            details = [
                c["provider"],
                "private" if c.get("private") else "cloud",
                *(
                    f"{label} {c[key]}"
                    for key, label in (("region", "region"), ("instance_type", "type"))
                    if c.get(key)
                ),
            ]
            if _money(c.get("expected_usd_h")):
                details.append(f"expected {_money(c.get('expected_usd_h'))}")
            if _money(c.get("max_price_usd_h")):
                details.append(f"max {_money(c.get('max_price_usd_h'))}")
            if c.get("hedge_group") is not None:
                details.append(f"hedge group {c['hedge_group']}")
            click.echo(f"    {rank}. {c['target']} ({', '.join(details)})")
            for reason in c.get("reasons") or []:
                click.echo(f"       - {reason}")
    else:
        click.echo("  candidates: none (nowhere to run it)")
    rejections = plan.get("rejections") or []
    if rejections:
        click.echo("  rejected")
        _table(["TARGET", "CODE", "DETAIL"], [[r["target"], r["code"], r["detail"]] for r in rejections], indent="    ")
    else:
        click.echo("  rejected: none")
    trace = plan.get("trace") or []
    if trace:
        click.echo("  trace")
        for step, line in enumerate(trace, 1):
            click.echo(f"    {step}. {line}")


@click.command()
@click.argument("task_id", metavar="TASK")
@output_option
@client_options
def explain(task_id: str, output_format: str, url: str, token: str | None) -> None:
    """Why TASK runs where it does: its receipt (operators).

    The task, then every placement decision (policy version, the signals used
    and their age, every candidate in order with its reasons, the rejected
    targets and why, the rule trace), then the attempts and their outcomes.
    """
    with _api(url, token) as client:
        receipt = client.get(_task_path(task_id, "/decision"))
    if output_format == "json":
        print_json(receipt)
        return
    task = receipt["task"]
    _fields(
        [
            ("task", task["id"]),
            ("tenant", task["tenant"]),
            ("kind", task["kind"]),
            ("priority", task["priority"]),
            ("sensitivity", task["data_sensitivity"]),
            ("state", task["state"]),
            *_waiting_field(task),
            ("target", task.get("target")),
            ("reason", task.get("reason")),
        ]
    )
    decisions = receipt.get("decisions") or []
    click.echo("")
    if not decisions:
        click.echo("no placement decision yet")
    for number, plan in enumerate(decisions, 1):
        _explain_decision(number, len(decisions), plan)
        click.echo("")
    attempts = receipt.get("attempts") or []
    if attempts:
        click.echo("attempts")
        _table(_ATTEMPT_COLUMNS, _attempt_rows(attempts), indent="  ")
    else:
        click.echo("attempts: none")


COMMANDS: list[click.Command] = [submit, tasks, explain]
