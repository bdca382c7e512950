"""``fusionctl explain``: a task's placement receipt, read the way an operator asks "why there?"."""

from __future__ import annotations

from typing import Any

import click

from controlplane.cli.client import client_options
from controlplane.cli.common import output_option, print_json
from controlplane.cli.tasks.render import ATTEMPT_COLUMNS, attempt_rows, fields, short_version, table, waiting_field
from controlplane.cli.tasks.session import api_session, task_path

__all__ = ["explain"]


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
    fields(
        [("policy version", short_version(plan.get("policy_version"))), ("decided at", plan.get("decided_at"))],
        indent="  ",
    )
    signals = plan.get("signals_used") or {}
    if signals:
        click.echo("  signals used")
        rows = [
            [key, *_signal_text(value if isinstance(value, dict) else {"value": value})]
            for key, value in signals.items()
        ]
        table(["SIGNAL", "VALUE", "AGE", "TTL", ""], sorted(rows, key=lambda r: str(r[0])), indent="    ")
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
            if c.get("market"):
                details.append(str(c["market"]))
            details += _estimate(c)
            if c.get("hedge_group") is not None:
                details.append(f"hedge group {c['hedge_group']}")
            click.echo(f"    {rank}. {c['target']} ({', '.join(details)})")
            for reason in c.get("reasons") or []:
                click.echo(f"       - {reason}")
    else:
        click.echo("  candidates: none (nowhere to run it)")
    if plan.get("replan_by"):
        click.echo(f"  plan again by {plan['replan_by']} (the deadline rule holds on-demand back until then)")
    rejections = plan.get("rejections") or []
    if rejections:
        click.echo("  rejected")
        table(["TARGET", "CODE", "DETAIL"], [[r["target"], r["code"], r["detail"]] for r in rejections], indent="    ")
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
    with api_session(url, token) as client:
        receipt = client.get(task_path(task_id, "/decision"))
    if output_format == "json":
        print_json(receipt)
        return
    task = receipt["task"]
    fields(
        [
            ("task", task["id"]),
            ("tenant", task["tenant"]),
            ("kind", task["kind"]),
            ("priority", task["priority"]),
            ("sensitivity", task["data_sensitivity"]),
            ("state", task["state"]),
            *waiting_field(task),
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
        table(ATTEMPT_COLUMNS, attempt_rows(attempts), indent="  ")
    else:
        click.echo("attempts: none")


def _estimate(candidate: dict[str, Any]) -> list[str]:
    """The expected-cost estimate of a candidate ranked by it: dollars per completed task, chance, sample size."""
    usd, chance, seen = (
        candidate.get("expected_usd_per_task"),
        candidate.get("completion_chance"),
        candidate.get("history_launches"),
    )
    if chance is None:
        return []
    shown = "unknown" if usd is None else f"${usd:.4f}"
    basis = "priors only" if not seen else f"{seen} launches seen"
    return [f"{shown} per completed task", f"chance {chance:.3f} ({basis})"]
