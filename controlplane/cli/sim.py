"""``fusionctl sim run``: the launch-day simulator (docs/simulator.md).

Runs the product's own scheduler and store under a virtual clock against a
world built from spot traces and price history, once per policy and
baseline, and prints the comparison: a table, the report as JSON (``-o
json``), and a self-contained HTML page (``--report``).

``--from-db URL --since 24h`` replays the tasks a FusionPlane database
recorded instead of the scenario's rate profile (:mod:`simulator.replay`).

Exit codes: 0 done, 65 a bad scenario, policy or option (the message names the field or the option).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from controlplane.cli.columns import table
from controlplane.cli.common import output_option

if TYPE_CHECKING:
    from simulator.scenario import Scenario

__all__ = ["sim"]

EXIT_BAD_INPUT = 65


@click.group(help="The launch-day simulator: what a policy costs and which SLAs it keeps, from real spot traces.")
def sim() -> None:
    pass


@sim.command("run")
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--policy",
    "policy_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A policy to compare (repeatable); default: the scenario's own policy",
)
@click.option(
    "--baselines",
    default="all",
    show_default=True,
    help="Comma-separated: seed, on-demand, private-only, static-cheapest, bound; all; or none",
)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Replaces the scenario's seed")
@click.option(
    "--scale",
    type=float,
    default=None,
    help="Run in miniature (or larger): arrival rates, private GPUs and spot capacity times this",
)
@click.option(
    "--from-db",
    "from_db",
    default=None,
    metavar="URL",
    envvar="FUSIONPLANE_SIM_FROM_DB",
    show_envvar=True,
    help="Replay the tasks stored in this FusionPlane database (read-only) instead of the scenario's rates; "
    "a URL with a password is better given in the environment, out of the process list",
)
@click.option(
    "--since",
    default=None,
    metavar="DURATION",
    help="With --from-db: the window replayed, up to the newest task (90m, 24h, 2d; default 24h)",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=64),
    default=None,
    help="Runs at once, in worker processes (default: the CPUs; the report is the same whatever it is)",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the comparison as one self-contained HTML page",
)
@output_option
def run_command(
    scenario: Path,
    policy_paths: tuple[Path, ...],
    baselines: str,
    seed: int | None,
    scale: float | None,
    from_db: str | None,
    since: str | None,
    jobs: int | None,
    report_path: Path | None,
    output_format: str,
) -> None:
    """Simulate SCENARIO (a JSON file, e.g. policies/scenarios/launch-day.json) and compare the runs."""
    from simulator.baselines import BASELINES
    from simulator.scenario import ScenarioError, load_scenario
    from simulator.simulate import PolicyFile, report_json, simulate

    try:
        loaded = load_scenario(scenario)
        if seed is not None:
            loaded = loaded.model_copy(update={"seed": seed})
        if scale is not None:
            if from_db is not None:
                raise ScenarioError("--scale: not with --from-db (a replay is the recorded traffic as it came)")
            loaded = loaded.scaled(scale)
        if from_db is not None:
            loaded = _replay(loaded, from_db, since or "24h")
        elif since is not None:
            raise ScenarioError("--since: only with --from-db")
        fleet = _read_policy(loaded.path(loaded.policy), "policy") if loaded.policy else {"targets": []}
        paths = list(policy_paths) or ([loaded.path(loaded.policy)] if loaded.policy else [])
        if not paths:
            raise ScenarioError("--policy: the scenario names no policy; give one")
        policies = [PolicyFile(name=path.stem, document=_read_policy(path, "--policy")) for path in paths]
        chosen = _baselines(baselines, BASELINES)
        report = simulate(loaded, policies, chosen, fleet=fleet, progress=_progress, jobs=jobs or os.cpu_count() or 1)
    except ScenarioError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if report_path is not None:
        from simulator.html_report import write_html

        write_html(report, report_path)
        click.echo(f"report written to {report_path}", err=True)
    if output_format == "json":
        click.echo(report_json(report), nl=False)
    else:
        print_comparison(report)


def _replay(scenario: Scenario, url: str, since: str) -> Scenario:
    from simulator.replay import parse_since, read_replay, replayed

    since_s = parse_since(since)
    replay = read_replay(url, since_s, scenario)
    click.echo(
        f"replaying {len(replay.arrivals)} tasks of the {since_s / 3600:g} h up to the database's newest",
        err=True,
    )
    return replayed(scenario, replay)


def _read_policy(path: Path, field: str) -> dict[str, Any]:
    from simulator.scenario import ScenarioError

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{field}: {path} cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise ScenarioError(f"{field}: {path.name} is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ScenarioError(f"{field}: {path.name} must hold a JSON object")
    return document


def _baselines(text: str, known: tuple[str, ...]) -> list[str]:
    from simulator.scenario import ScenarioError

    if text.strip() == "all":
        return list(known)
    if text.strip() in ("", "none"):
        return []
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in known:
            raise ScenarioError(f"--baselines: unknown baseline {name!r} (one of {', '.join(known)}, all or none)")
    return names


def _progress(run: str, share: float) -> None:
    click.echo(f"{run}: {share * 100:.0f}% of the simulated time", err=True)


def _money(value: Any, digits: int = 2) -> str | None:
    return None if value is None else f"${value:,.{digits}f}"


def _share(value: Any) -> str | None:
    return None if value is None else f"{value * 100:.1f}%"


def print_comparison(report: dict[str, Any]) -> None:
    facts = report["scenario"]
    click.echo(
        f"scenario {facts['name']}: {facts['tasks']} tasks over {facts['duration_s'] / 3600:g} h, seed {facts['seed']}"
    )
    headers = [
        "run",
        "done",
        "failed",
        "open",
        "lost",
        "$ total",
        "$/done",
        "SLA urgent",
        "SLA high",
        "SLA normal",
        "SLA low",
        "wait p50/p95/p99 s",
        "done p95 s",
        "preempt",
        "failover",
        "GPU-h lost",
        "private off",
    ]
    rows = []
    for entry in report["runs"]:
        s = entry["summary"]
        if entry["kind"] == "bound":
            rows.append([entry["name"], None, None, None, None, _money(s["usd_total"]), None, *([None] * 10)])
            continue
        sla = s["sla"]
        wait = s["queue_wait_s"]
        rows.append(
            [
                entry["name"],
                s["completed"],
                s["failed"],
                s["unfinished"],
                s["lost"],
                _money(s["usd_total"]),
                _money(s["usd_per_completed"], 5),
                *(_share(sla.get(p)) for p in ("urgent", "high", "normal", "low")),
                "/".join("-" if wait[k] is None else f"{wait[k]:g}" for k in ("p50", "p95", "p99")),
                s["completion_s"]["p95"],
                s["preemptions"],
                s["failovers"],
                s["gpu_hours_lost"],
                s["private_off_private"],
            ]
        )
    table(headers, rows)
