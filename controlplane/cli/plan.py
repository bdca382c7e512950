"""``fusionctl plan``: where a task would run, offline, from three files.

Pure: the policy file, a signals snapshot (docs/policies.md, "Signals
snapshot JSON") and a task file (the ``POST /v1/tasks`` body) go into the
engine's ``plan()``; nothing is read from the API, the database or the
clock. The decision time defaults to the snapshot's ``taken_at``, so the
same files always give the same plan; ``--at`` asks "and ten minutes later?".

Exit codes: 0 a plan was made (even one with no candidate: that is an
answer), 65 a bad policy, snapshot or task file (one line naming the file and
the JSON path), 2 a usage error.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from controlplane.api.plan_view import plan_view
from controlplane.api.task_file import DEFAULT_TENANT, TaskFileError, check_tenant, load_task_file
from controlplane.cli.columns import table
from controlplane.cli.common import print_json
from controlplane.config import seed_clouds_from_env
from controlplane.policy import PolicyError, plan
from controlplane.policy_sources import load_policy_file
from controlplane.signals.snapshot_json import SnapshotError, load_snapshot_file, parse_time
from faceswap import EXIT_BAD_INPUT

__all__ = ["plan_command"]


def _bad_input(path: Path, exc: PolicyError | SnapshotError | TaskFileError) -> NoReturn:
    # errors with a JSON path lack the file's name; those without one already carry it
    click.echo(f"error: {path}: {exc}" if exc.path else f"error: {exc}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _at(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value, "--at")
    except SnapshotError as exc:
        raise click.BadParameter(exc.message) from exc


def _tenant(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_tenant(value)
    except TaskFileError as exc:
        raise click.BadParameter(exc.message) from exc


def _signal_state(used: dict[str, Any]) -> str:
    return "MISSING" if used.get("missing") else "STALE" if used.get("stale") else "fresh"


def _print_text(view: dict[str, Any], *, policy_file: Path) -> None:
    click.echo(f"policy   {view['policy_version'][:12]}  ({policy_file})")
    click.echo(f"at       {view['decided_at']}")
    candidates = view["candidates"]
    click.echo("")
    if candidates:
        click.echo("candidates (in launch order)")
        table(
            ["#", "TARGET", "PROVIDER", "PRIVATE", "REGION", "INSTANCE TYPE", "MAX $/H", "EXPECTED $/H", "HEDGE"],
            [
                [
                    rank,
                    c["target"],
                    c["provider"],
                    c["private"],
                    c["region"],
                    c["instance_type"],
                    c["max_price_usd_h"],
                    c["expected_usd_h"],
                    c["hedge"],
                ]
                for rank, c in enumerate(candidates, 1)
            ],
            indent="  ",
        )
        click.echo("  why")
        for rank, c in enumerate(candidates, 1):
            click.echo(f"    {rank}. {c['target']}: {'; '.join(c['reasons'])}")
    else:
        click.echo("candidates: none (every target was rejected)")
    click.echo("")
    if view["rejected"]:
        click.echo("rejected")
        rows = [[r["target"], r["code"], "; ".join(r["reasons"])] for r in view["rejected"]]
        table(["TARGET", "CODE", "WHY"], rows, indent="  ")
    else:
        click.echo("rejected: none")
    click.echo("")
    click.echo("trace")
    for step, line in enumerate(view["trace"], 1):
        click.echo(f"  {step}. {line}")
    signals = view["signals_used"]
    click.echo("")
    if signals:
        click.echo("signals used")
        table(
            ["SIGNAL", "VALUE", "AGE", "TTL", ""],
            [
                [
                    name,
                    used.get("value"),
                    None if used.get("age_seconds") is None else f"{used['age_seconds']:g}s",
                    None if used.get("ttl_seconds") is None else f"{used['ttl_seconds']:g}s",
                    _signal_state(used),
                ]
                for name, used in sorted(signals.items())
            ],
            indent="  ",
        )
    else:
        click.echo("signals used: none")


@click.command("plan")
@click.option(
    "--policy",
    "policy_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy document (docs/policies.md).",
)
@click.option(
    "--signals",
    "signals_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="SNAPSHOT.json",
    help="Signals snapshot (docs/policies.md, Signals snapshot JSON).",
)
@click.option(
    "--task",
    "task_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="TASK.json",
    help="The task: a POST /v1/tasks body. Local paths need not exist.",
)
@click.option(
    "--tenant",
    default=DEFAULT_TENANT,
    show_default=True,
    callback=_tenant,
    help="The task's tenant (rules may match on it).",
)
@click.option(
    "--at",
    "at",
    default=None,
    callback=_at,
    metavar="ISO-TIME",
    help="Decision time, with a zone (e.g. 2026-11-24T12:10:00Z). Default: the snapshot's taken_at.",
)
@click.option(
    "--output",
    "-o",
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: the plan view (docs/policies.md, Dry-run output).",
)
def plan_command(
    policy_file: Path,
    signals_file: Path,
    task_file: Path,
    tenant: str,
    at: datetime | None,
    output_format: str,
) -> None:
    """Where a task would run: the engine's plan from a policy, a signals snapshot and a task, offline.

    Prints the candidates in launch order with their reasons, the rejected
    targets with their code, the rule trace, and the signals used. Exits 65
    naming the file and JSON path when an input is bad.
    """
    try:
        seed_clouds = seed_clouds_from_env()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        policy = load_policy_file(policy_file, seed_clouds=seed_clouds)
    except PolicyError as exc:
        _bad_input(policy_file, exc)
    try:
        snapshot = load_snapshot_file(signals_file)
    except SnapshotError as exc:
        _bad_input(signals_file, exc)
    now = at or snapshot.taken_at
    try:
        task = load_task_file(task_file, tenant=tenant, now=now)
    except TaskFileError as exc:
        _bad_input(task_file, exc)
    view = plan_view(plan(task, snapshot, policy, now))
    if output_format == "json":
        print_json(view)
    else:
        _print_text(view, policy_file=policy_file)
