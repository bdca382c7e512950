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
from controlplane.cli.tasks.follow import PlainDisplay, follow_task, outcome_line, result_lines
from controlplane.cli.tasks.inputs import is_uri, local_input, target_kind
from controlplane.cli.tasks.render import table
from controlplane.cli.tasks.session import api_session, task_path
from controlplane.cli.tasks.upload import upload_resumable
from controlplane.domain import DataSensitivity, Priority, TaskKind, TaskState
from controlplane.domain.worker_spec import SpecOptions

__all__ = ["submit"]

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_NAME = 128


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


def _upload(client: ApiClient, value: str, *, option: str, wanted: str) -> str:
    """Send a local file to the API (resumable, in chunks) and return the URI it is stored under; URIs pass through."""
    if is_uri(value):
        return value
    path = local_input(value, option=option, wanted=wanted)
    return upload_resumable(client, path, name=_upload_name(path))


def _labels(values: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = value
    return labels


def _legacy_output(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--output`` once was the result's location here and is the output format everywhere else.

    ``table`` and ``json`` are taken as the format, like on every command; any
    other value is refused with the new name, never sent as a result path.
    """
    if value is None or value in ("table", "json"):
        return value
    raise click.BadParameter(
        f"{value!r} is not table or json: the result's location is --result {value} (-o/--format is the output format)",
        ctx=ctx,
        param=param,
    )


@click.command()
@click.option("--source", required=True, help="The face to put in: a local file (uploaded) or a URI.")
@click.option("--target", required=True, help="The image or video to change: a local file (uploaded) or a URI.")
@click.option(
    "--result",
    "output_uri",
    default=None,
    metavar="URI",
    help="Where the result goes: s3://, az://, or a new path under your output folder.",
)
@click.option("--kind", type=click.Choice([k.value for k in TaskKind]), default=None, help="Default: from --target.")
@click.option("--swapper", type=click.Choice(_choices("swapper")), default=None)
@click.option("--face-selector", default=None, help="all, largest, or index:N (left to right).")
@click.option("--execution-provider", type=click.Choice(_choices("execution_provider")), default=None)
@click.option("--encoder", type=click.Choice(_choices("encoder")), default=None, help="Video encoder.")
@click.option("--decoder", type=click.Choice(_choices("decoder")), default=None, help="Video decoder (nvdec: the GPU).")
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
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default=None,
    help="Output format, as on every command (the result's location is --result).  [default: table]",
)
@click.option("--output", "legacy_output", default=None, hidden=True, callback=_legacy_output)
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
    decoder: str | None,
    quality: int | None,
    priority: str | None,
    sensitivity: str | None,
    deadline: int | None,
    budget: float | None,
    label_items: tuple[str, ...],
    idempotency_key: str | None,
    wait: bool,
    interval: float,
    output_format: Literal["table", "json"] | None,
    legacy_output: Literal["table", "json"] | None,
    url: str,
    token: str | None,
) -> None:
    """Queue a face-swap task; local files are uploaded first.

    Prints the task's id, state and URL (or its JSON with -o json). With
    --wait, follows it to the end (progress on stderr) and exits 0 only if it
    succeeded.
    """
    output_format = output_format or legacy_output or "table"
    labels = _labels(label_items)
    options = {
        k: v
        for k, v in {
            "swapper": swapper,
            "face_selector": face_selector,
            "execution_provider": execution_provider,
            "encoder": encoder,
            "decoder": decoder,
            "quality": quality,
        }.items()
        if v is not None
    }
    with api_session(url, token) as client:
        body: dict[str, Any] = {
            "source": _upload(client, source, option="--source", wanted="image"),
            "target": _upload(client, target, option="--target", wanted=target_kind(target, kind)),
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
        for line in result_lines(final, api_url=client.url):
            click.echo(line)
    sys.exit(0 if final["state"] == TaskState.SUCCEEDED.value else 1)
