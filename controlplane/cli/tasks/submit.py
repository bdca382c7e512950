"""``fusionctl submit``: queue a face-swap task, uploading local files first."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import click

from controlplane.cli.client import ApiClient, client_options
from controlplane.cli.common import print_json
from controlplane.cli.tasks.follow import PlainDisplay, follow_task, outcome_line
from controlplane.cli.tasks.render import table
from controlplane.cli.tasks.session import api_session, task_path
from controlplane.cli.tasks.upload import upload_resumable
from controlplane.domain import DataSensitivity, Priority, TaskKind, TaskState
from controlplane.domain.worker_spec import SpecOptions

__all__ = ["submit"]

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_NAME = 128
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _choices(field: str) -> list[str]:
    """The values a worker-spec option allows (its ``Literal``), so the CLI never drifts from the API."""
    annotation = SpecOptions.model_fields[field].annotation
    return [str(value) for value in get_args(annotation)]


def _upload_name(path: Path) -> str:
    """The basename made safe for an upload's file name (letters, digits, '.', '_', '-')."""
    name = _UNSAFE_NAME_CHARS.sub("_", path.name).lstrip(".") or "upload"
    if len(name) > _MAX_NAME:
        suffix = path.suffix if _UNSAFE_NAME_CHARS.search(path.suffix) is None else ""
        name = name[: _MAX_NAME - len(suffix)] + suffix
    return name


def _is_local_file(value: str) -> bool:
    return _URI.match(value) is None and Path(value).expanduser().exists()


def _upload(client: ApiClient, value: str, *, option: str) -> str:
    """Send a local file to the API (resumable, in chunks) and return the URI it is stored under; URIs pass through."""
    if not _is_local_file(value):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise click.BadParameter(f"{value} is not a file", param_hint=option)
    return upload_resumable(client, path, name=_upload_name(path))


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
    with api_session(url, token) as client:
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
        location = client.url + response.headers.get("location", task_path(task["id"]))
        if not wait:
            if output_format == "json":
                print_json(task)
            else:
                table(["ID", "STATE", "LOCATION"], [[task["id"], task["state"], location]])
            return
        if output_format == "table":
            table(["ID", "STATE", "LOCATION"], [[task["id"], task["state"], location]])
        final = follow_task(client, task["id"], interval=interval, display=PlainDisplay(err=True))
    if output_format == "json":
        print_json(final)
    else:
        click.echo(outcome_line(final))
    sys.exit(0 if final["state"] == TaskState.SUCCEEDED.value else 1)
