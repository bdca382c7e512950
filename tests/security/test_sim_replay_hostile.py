"""Hostile ``--since`` values, database URLs and database rows for ``fusionctl sim run --from-db``.

Every one exits 65 with a message that names the option; no URL is ever echoed (it may carry a password), no
value is echoed raw (control characters come out escaped), and nothing of a tenant's task beyond what the
report already shows reaches the run.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from controlplane.cli.main import cli
from simulator import replay as replay_module
from simulator.replay import parse_since, read_replay
from simulator.scenario import ScenarioError, parse_scenario
from tests.support.sim import launch_day_miniature, small_scenario
from tests.support.sim_db import Recorded, recorded_database

SECRET = "hunter2-Sw0rdfish"


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return launch_day_miniature(tmp_path_factory.mktemp("scenario"))


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return recorded_database(tmp_path_factory.mktemp("db") / "fusionplane.db", [Recorded(at_s=0.0)])


def sim(scenario_file: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["sim", "run", str(scenario_file), "--baselines", "none", *args])


@pytest.mark.parametrize(
    "text",
    [
        "-1h",
        "0h",
        "0d",
        "367d",
        "999999999d",
        "9" * 10 + "s",
        "9" * 5000 + "h",
        "1e9h",
        "1.5h",
        "nan",
        "inf",
        "24",
        "h",
        "",
        "24 h",
        "24H",
        "\u0662\u0664h",  # Arabic-Indic digits: \d would take them
        "24h\n0",
        "\x1b[31m24h",
        "24h; rm -rf /",
    ],
)
def test_a_bad_since_is_refused_naming_the_option_and_never_echoed_raw(text: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_since(text)
    message = str(caught.value)
    assert message.startswith("--since: ")
    assert message.isascii()
    assert "\x1b" not in message
    assert "\n" not in message
    assert len(message) < 200


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://fusion:{SECRET}@127.0.0.1:1/fusionplane",  # nothing listens on port 1
        f"postgresql+psycopg://fusion:{SECRET}@127.0.0.1:1/fusionplane?sslmode=disable",
        f"postgresql://fusion@127.0.0.1:1/fusionplane?password={SECRET}",
        f"postgres://fusion:{SECRET}@[::1",
        f"mysql://fusion:{SECRET}@db.internal/fusionplane",
        f"{SECRET}",
        f"://{SECRET}",
        f"sqlite:////nonexistent/{SECRET}.db",
        f"sqlite:///file:{SECRET}?mode=rwc&uri=true",
        "sqlite:///:memory:",
        "sqlite://",
        f"sqlite:////tmp/{SECRET}\x1b[2J.db",
    ],
)
def test_a_bad_url_exits_65_naming_the_option_and_never_shows_the_password(scenario_file: Path, url: str) -> None:
    result = sim(scenario_file, "--from-db", url, "--since", "1h")
    assert result.exit_code == 65, result.output
    assert "--from-db: " in result.stderr
    assert SECRET not in result.output
    assert SECRET not in result.stdout
    assert "\x1b" not in result.output
    assert not result.stdout  # no report


def test_the_url_may_come_from_the_environment_out_of_the_process_list(scenario_file: Path) -> None:
    """``FUSIONPLANE_SIM_FROM_DB`` stands for ``--from-db``: a password on the command line is in ``ps`` for all."""
    url = f"postgresql://fusion:{SECRET}@127.0.0.1:1/fusionplane"  # nothing listens on port 1
    result = CliRunner().invoke(
        cli,
        ["sim", "run", str(scenario_file), "--baselines", "none", "--since", "1h"],
        env={"FUSIONPLANE_SIM_FROM_DB": url},
    )
    assert result.exit_code == 65, result.output
    assert result.stderr.startswith("error: --from-db: cannot connect")  # read from there, and refused as one
    assert SECRET not in result.output


def test_a_since_that_is_bad_exits_65_before_the_database_is_opened(scenario_file: Path, tmp_path: Path) -> None:
    missing = tmp_path / "never-made.db"
    result = sim(scenario_file, "--from-db", f"sqlite:///{missing}", "--since", "-5m")
    assert result.exit_code == 65
    assert "--since: '-5m' is not a duration" in result.stderr
    assert not missing.exists()  # not even created by a look at it


def test_a_path_that_is_not_a_database_is_refused_and_left_alone(scenario_file: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text(f"password={SECRET}\n" * 100, encoding="utf-8")
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.db"
    folder.mkdir()
    for path in (text, fifo, folder):
        result = sim(scenario_file, "--from-db", f"sqlite:///{path}")
        assert result.exit_code == 65, result.output
        assert result.stderr.startswith("error: --from-db: ")
        assert SECRET not in result.output
    assert text.read_text(encoding="utf-8") == f"password={SECRET}\n" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.db", "notes.txt", "pipe.db"]


def test_since_and_scale_need_and_refuse_a_database(scenario_file: Path, database: str) -> None:
    alone = sim(scenario_file, "--since", "2h")
    assert alone.exit_code == 65
    assert "--since: only with --from-db" in alone.stderr
    scaled = sim(scenario_file, "--from-db", database, "--scale", "0.5")
    assert scaled.exit_code == 65
    assert "--scale: not with --from-db" in scaled.stderr


def _tamper(url: str, statement: str) -> None:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute(statement)


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (f"UPDATE tasks SET tenant = '../{SECRET}'", "its tenant is not a tenant name"),
        (f"UPDATE tasks SET tenant = '{{n}}{SECRET}'", "its tenant is not a tenant name"),
        (f"UPDATE tasks SET priority = '{SECRET}'", "not one the simulator knows"),
        ("UPDATE tasks SET kind = 'hologram'", "not one the simulator knows"),
        ("UPDATE tasks SET deadline_seconds = -5", "its deadline is not a positive number"),
        ("DROP TABLE events", "--from-db: cannot read the tasks ('no such table: events')"),
        (f"UPDATE tasks SET created_at = '{SECRET}'", "--from-db: cannot read the tasks (a stored value is malformed"),
        (f"UPDATE events SET at = '{SECRET}'", "--from-db: cannot read the tasks (a stored value is malformed"),
    ],
)
def test_a_hostile_row_is_refused_without_echoing_it(tmp_path: Path, statement: str, expected: str) -> None:
    url = recorded_database(tmp_path / "tampered.db", [Recorded(at_s=0.0), Recorded(at_s=5.0, ran=(6.0, 2.0))])
    _tamper(url, statement)
    with pytest.raises(ScenarioError) as caught:
        read_replay(url, 3600.0, parse_scenario(small_scenario()))
    message = str(caught.value)
    assert message.startswith("--from-db: task '") or message.startswith("--from-db: cannot read")
    assert expected in message
    assert SECRET not in message


def test_a_window_of_too_many_tasks_is_refused_naming_since(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = recorded_database(tmp_path / "busy.db", [Recorded(at_s=float(i)) for i in range(3)])
    monkeypatch.setattr(replay_module, "MAX_REPLAY_TASKS", 2)
    with pytest.raises(ScenarioError, match=r"^--since: the window holds 3 tasks, more than the 2"):
        read_replay(url, 3600.0, parse_scenario(small_scenario()))
    assert len(read_replay(url, 1.0, parse_scenario(small_scenario())).arrivals) == 2
