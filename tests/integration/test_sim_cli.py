"""``fusionctl sim run`` through the CLI: the launch day cut to an hour, its outputs and its refusals.

The scenario is policies/scenarios/launch-day.json made small at test time (tests/support/sim.py,
``launch_day_miniature``: one hour of 30 tasks, an hour of drain, 4 private GPUs, the shipped traces and
prices), so each run takes a second or two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from controlplane.cli.main import cli
from simulator.replay import read_only
from tests.support.html_tree import header_and_body, parse
from tests.support.sim import LAUNCH_DAY, launch_day_miniature
from tests.support.sim_db import Recorded, record_tasks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
pytest_plugins = ["tests.integration.store_fixtures"]

FLEET = LAUNCH_DAY.parent / "launch-day-fleet.json"


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return launch_day_miniature(tmp_path_factory.mktemp("scenario"))


@pytest.fixture(scope="module")
def home_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second policy to compare: the launch day's fleet, everything on the private cluster."""
    document = json.loads(FLEET.read_text(encoding="utf-8"))
    document["rules"] = [{"name": "home", "targets": ["onprem"]}]
    path = tmp_path_factory.mktemp("policies") / "home-only.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def fusionctl(*args: str | Path) -> Result:
    # in turn unless a test asks for workers: a worker process costs an interpreter start and the imports
    jobs = () if "--jobs" in args else ("--jobs", "1")
    return CliRunner().invoke(cli, [str(arg) for arg in (*args, *jobs)])


def test_the_same_seed_gives_byte_identical_json_in_worker_processes_or_not(scenario_file: Path) -> None:
    args = ("sim", "run", scenario_file, "--baselines", "on-demand,bound", "--seed", "3", "-o", "json")
    first, second = fusionctl(*args, "--jobs", "2"), fusionctl(*args, "--jobs", "2")
    in_turn = fusionctl(*args, "--jobs", "1")
    for result in (first, second, in_turn):
        assert result.exit_code == 0, result.output
    assert first.stdout == second.stdout == in_turn.stdout
    report = json.loads(first.stdout)
    assert report["scenario"]["seed"] == 3
    assert [run["name"] for run in report["runs"]] == ["policy:launch-day-fleet", "baseline:on-demand", "bound:offline"]
    assert all(run["summary"]["lost"] == 0 for run in report["runs"] if run["kind"] != "bound")


def test_the_table_and_the_report_have_one_row_per_policy_and_baseline(
    scenario_file: Path, home_only: Path, tmp_path: Path
) -> None:
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    result = fusionctl(
        "sim", "run", scenario_file, "--policy", FLEET, "--policy", home_only,
        "--baselines", "private-only,static-cheapest,bound", "--report", page,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = [
        "policy:launch-day-fleet",
        "policy:home-only",
        "baseline:private-only",
        "baseline:static-cheapest",
        "bound:offline",
    ]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("scenario launch-hour: ")
    assert lines[1].split()[:4] == ["run", "done", "failed", "open"]
    assert [line.split()[0] for line in lines[2:]] == expected
    assert f"report written to {page}" in result.stderr
    header, body = header_and_body(parse(page.read_text(encoding="utf-8")).find("table", id="comparison"))
    assert header[:2] == ["Run", "Kind"]
    assert [row[0].text() for row in body] == expected
    assert [row[1].text() for row in body] == ["policy", "policy", "baseline", "baseline", "bound"]


def _spoiled(scenario_file: Path, tmp_path: Path) -> Path:
    document: dict[str, Any] = json.loads(scenario_file.read_text(encoding="utf-8"))
    document["world"]["clouds"][1]["instances_per_unit"] = -3
    path = tmp_path / "spoiled.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_a_bad_field_exits_65_naming_its_path(scenario_file: Path, tmp_path: Path) -> None:
    result = fusionctl("sim", "run", _spoiled(scenario_file, tmp_path), "--baselines", "none")
    assert result.exit_code == 65
    assert result.stderr.startswith("error: world.clouds[1].instances_per_unit: ")
    assert not result.stdout


def test_an_unknown_baseline_exits_65_naming_it(scenario_file: Path) -> None:
    result = fusionctl("sim", "run", scenario_file, "--baselines", "seed,nonsense")
    assert result.exit_code == 65
    assert "--baselines: unknown baseline 'nonsense'" in result.stderr
    assert not result.stdout


#: an hour and a half of a small database: the last hour is replayed (the first task is outside it)
RECORDED = [
    Recorded(at_s=0.0, tenant="early"),
    Recorded(at_s=1800.0, priority="urgent", deadline_s=300, ran=(1805.0, 4.0)),
    Recorded(at_s=2400.0, sensitivity="private", tenant="globex", ran=(2410.0, 6.0)),
    Recorded(at_s=3000.0, kind="video", tenant="initech"),
    Recorded(at_s=4200.0, priority="low", ran=(4210.0, 3.0), instance=("aws", "us-east-1", "p3.2xlarge")),
    Recorded(at_s=5400.0, priority="high", deadline_s=1800),
]


def test_a_database_is_replayed_end_to_end(scenario_file: Path, database_url: str, tmp_path: Path) -> None:
    url = record_tasks(database_url, RECORDED)
    page = tmp_path / "replay.html"
    args = ("sim", "run", scenario_file, "--from-db", url, "--since", "60m", "--baselines", "on-demand")
    result = fusionctl(*args, "--report", page, "-o", "json")
    assert result.exit_code == 0, result.output
    assert "replaying 5 tasks of the 1 h up to the database's newest" in result.stderr
    report = json.loads(result.stdout)
    facts = report["scenario"]
    assert facts["tasks"] == 5
    assert facts["duration_s"] == 3600.0
    assert "Workload replayed from a database: 5 tasks" in facts["description"]
    for run in report["runs"]:
        summary = run["summary"]
        assert summary["tasks"] == summary["completed"] == 5, run["name"]
        assert summary["lost"] == summary["private_off_private"] == 0
    everything = result.stdout + page.read_text(encoding="utf-8") + result.stderr
    assert "secret" not in everything
    assert url not in everything
    assert fusionctl(*args, "-o", "json").stdout == result.stdout  # the same database replays the same way


def test_the_replay_connection_cannot_write(database_url: str) -> None:
    url = record_tasks(database_url, RECORDED[:2])
    with read_only(url) as conn, pytest.raises(SQLAlchemyError, match=r"read-only|readonly"):
        conn.execute(text("DELETE FROM tasks"))
    with read_only(url) as conn:
        assert conn.execute(text("SELECT count(*) FROM tasks")).scalar_one() == 2


def test_python_dash_m_runs_the_same_cli(scenario_file: Path) -> None:
    """``python -m controlplane.cli.main`` is fusionctl (it did nothing at all before)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "controlplane.cli.main", "sim", "run", str(scenario_file), "--baselines", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 65
    assert "nonsense" in result.stderr
