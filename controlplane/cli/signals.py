"""``fusionctl signals``: what the planner sees now (value, age, fresh or stale) and what it saw before."""

from __future__ import annotations

import time
from typing import Any

import click

from controlplane.cli.client import ApiClient, client_options
from controlplane.cli.common import output_option, parse_duration, print_json

__all__ = ["signals"]


def _seconds(text: str | None) -> int | None:
    return None if text is None else parse_duration(text, option="--since")


#: what a free_gpus value counts, by the row's unit (a local target's are worker slots, not GPUs)
_COUNTS = {"gpus": "GPUs", "local_slots": "local slots"}


def _value(row: dict[str, Any]) -> str:
    value = float(row["value"])
    if row.get("unit") in _COUNTS:
        return f"{value:g} {_COUNTS[row['unit']]}"
    if row["source"] == "spot_price":
        return f"{value:.4f} $/h"
    if row["source"] in ("gpu_utilization", "gpu_memory_used"):
        return f"{value * 100:.1f} %"
    return f"{value:g}"


def _print_table(body: dict[str, Any]) -> None:
    click.echo(f"{'SOURCE':<16} {'KEY':<44} {'VALUE':>14} {'AGE':>9} {'TTL':>7}  STATUS")
    for row in body["signals"]:
        ttl = "-" if row["ttl_seconds"] is None else f"{row['ttl_seconds']:g}s"
        click.echo(
            f"{row['source']:<16} {row['key'][:44]:<44} {_value(row):>14} {row['age_seconds']:>8.1f}s {ttl:>7}  "
            f"{row['status']}"
        )
    if body.get("pollers"):
        click.echo("")
        click.echo(f"{'POLLER':<12} {'LAST SUCCESS':<27} {'FAILS':>5}  PROBLEM")
        for poller in body["pollers"]:
            problem = poller["last_error"] or "; ".join(poller["problems"]) or "-"
            last = (poller["last_success_at"] or "never")[:26]
            click.echo(f"{poller['source']:<12} {last:<27} {poller['failures_in_a_row']:>5}  {problem[:100]}")


@click.group(invoke_without_command=True)
@client_options
@click.option("--source", default=None, help="Only this source (gpu_utilization, free_gpus, spot_price, queue, ...).")
@click.option("--watch", "-w", is_flag=True, help="Refresh every 2 s until Ctrl-C.")
@output_option
@click.pass_context
def signals(
    ctx: click.Context, url: str, token: str | None, source: str | None, watch: bool, output_format: str
) -> None:
    """Every live signal: value, age, TTL, fresh or stale; and each poller's health."""
    if ctx.invoked_subcommand is not None:
        return
    client = ApiClient(url, token)
    try:
        while True:
            body = client.get("/v1/signals", source=source)
            if output_format == "json":
                print_json(body)
            else:
                if watch:
                    click.clear()
                _print_table(body)
            if not watch:
                return
            time.sleep(2.0)
    except KeyboardInterrupt:
        return
    finally:
        client.close()


@signals.command()
@client_options
@click.option("--source", default=None)
@click.option("--key", default=None, help="e.g. aws/us-east-1/g5.xlarge or a target name")
@click.option("--since", "since_text", default=None, help="30m, 24h, 7d")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@output_option
def history(
    url: str,
    token: str | None,
    source: str | None,
    key: str | None,
    since_text: str | None,
    limit: int,
    output_format: str,
) -> None:
    """Recorded values, newest first."""
    client = ApiClient(url, token)
    try:
        items = client.get(
            "/v1/signals/history", source=source, key=key, since_seconds=_seconds(since_text), limit=limit
        )["items"]
    finally:
        client.close()
    if output_format == "json":
        print_json(items)
        return
    click.echo(f"{'OBSERVED AT':<33} {'SOURCE':<16} {'KEY':<44} VALUE")
    for item in items:
        click.echo(f"{item['observed_at']:<33} {item['source']:<16} {item['key'][:44]:<44} {item['value']:g}")
