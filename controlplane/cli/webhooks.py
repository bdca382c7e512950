"""``fusionctl webhooks list|retry``: the webhook deliveries of the caller's tenant (operators: every tenant's)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from controlplane.cli.client import client_options
from controlplane.cli.columns import table
from controlplane.cli.common import output_option, print_json
from controlplane.cli.tasks.session import api_session

__all__ = ["webhooks"]

_COLUMNS = ["ID", "STATE", "TYPE", "TASK", "TENANT", "TRIES", "STATUS", "CREATED", "ERROR"]
_STATES = ["pending", "delivering", "delivered", "failed"]


def _row(delivery: dict[str, Any]) -> list[Any]:
    return [
        delivery["id"],
        delivery["state"],
        delivery["type"],
        delivery["task_id"],
        delivery["tenant"],
        delivery["attempts"],
        delivery.get("last_status"),
        delivery.get("created_at"),
        delivery.get("last_error"),
    ]


@click.group()
def webhooks() -> None:
    """What was told to submitters by webhook, and retries of what could not be."""


@webhooks.command("list")
@click.option("--state", type=click.Choice(_STATES), default=None, help="e.g. failed: what needs a look.")
@click.option("--task", "task_id", default=None, help="One task's deliveries.")
@click.option("--tenant", default=None, help="Operators: one tenant's deliveries (submitters see only their own).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--after", default=None, help="The next_after of a previous page.")
@output_option
@client_options
def list_deliveries(
    state: str | None,
    task_id: str | None,
    tenant: str | None,
    limit: int,
    after: str | None,
    output_format: str,
    url: str,
    token: str | None,
) -> None:
    """Webhook deliveries, newest first."""
    with api_session(url, token) as client:
        page = client.get(
            "/v1/webhooks/deliveries", state=state, task_id=task_id, tenant=tenant, limit=limit, after=after
        )
    if output_format == "json":
        print_json(page)
        return
    table(_COLUMNS, [_row(d) for d in page["deliveries"]])
    if page.get("next_after"):
        click.echo(f"more deliveries: --after {page['next_after']}", err=True)


@webhooks.command("retry")
@click.argument("delivery_id")
@output_option
@client_options
def retry(delivery_id: str, output_format: str, url: str, token: str | None) -> None:
    """Send a failed delivery again (same event id, a fresh retry window)."""
    with api_session(url, token) as client:
        delivery = client.post(f"/v1/webhooks/deliveries/{quote(delivery_id, safe='')}/retry")
    if output_format == "json":
        print_json(delivery)
        return
    click.echo(f"{delivery['id']}: {delivery['state']} (due now)")
