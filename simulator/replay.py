"""A workload replayed from a FusionPlane database: ``fusionctl sim run SCENARIO --from-db URL --since 24h``.

The tasks a real control plane stored are read (read-only: a SQLite file is
opened with ``mode=ro``, a PostgreSQL session is ``default_transaction_read_only``)
and each becomes an :class:`~simulator.workload.Arrival`:

- **which tasks**: every task created in the ``--since`` window that ends at
  the database's newest task (not at the wall clock: the same database
  replays the same way whenever it is read), whatever became of it;
- **when**: at its offset from the window's start, on the scenario's clock
  (the window's start is the scenario's ``start``; arrivals stay at least a
  millisecond apart, in creation order); the run's duration is the window;
- **what**: its recorded priority, data sensitivity, kind, tenant and
  deadline; its work is the run time of its succeeded attempt (from that
  attempt's ``running`` event to its ``succeeded`` event) times the
  scenario's speed for the instance type it ran on, else a draw from the
  scenario's work range for its kind, with the scenario's seed.

Nothing else of a task is carried over: its URIs, options, labels and
budget stay in the database; the simulated task gets the scenario's URI
templates. The URL is never echoed: errors name the option, not the value.
The scenario still supplies the world; its ``workload.rate`` and
``max_tasks`` are not used.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, Row, create_engine, func, select
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from controlplane.domain import DataSensitivity, Priority, TaskKind, TaskSpec, is_tenant_name
from controlplane.store import normalize_url
from controlplane.store.tables import attempts, events, tasks
from simulator.scenario import Scenario, ScenarioError
from simulator.workload import Arrival, RecordedWorkload

__all__ = ["MAX_REPLAY_TASKS", "MAX_SINCE_S", "Replay", "parse_since", "read_only", "read_replay", "replayed"]

#: the longest window: a scenario's longest duration (366 days)
MAX_SINCE_S = 366 * 86_400.0
#: the most tasks one replay reads (twice the launch day)
MAX_REPLAY_TASKS = 1_000_000

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_SINCE = re.compile(r"([0-9]{1,9})([smhd])", re.ASCII)
_MIN_GAP_S = 0.001
_CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Replay:
    """The arrivals read from a database, and the window they came from."""

    arrivals: tuple[Arrival, ...]
    window_s: float
    #: how many took their work from a recorded run (the rest were drawn)
    recorded_work: int


def parse_since(text: str) -> float:
    """``--since``: a whole number and a unit (``90m``, ``24h``, ``2d``; also ``s``), in seconds."""
    match = _SINCE.fullmatch(text.strip()) if len(text) <= 32 else None
    if match is None:
        raise ScenarioError(
            f"--since: {_shown(text)} is not a duration; give a whole number and a unit: 90m, 24h or 2d"
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= MAX_SINCE_S:
        raise ScenarioError(f"--since: must be more than 0 and at most 366 days (got {_shown(text)})")
    return seconds


def replayed(scenario: Scenario, replay: Replay) -> Scenario:
    """``scenario`` with the replay as its workload and the window as its duration (the world unchanged)."""
    last = replay.arrivals[-1].at_s if replay.arrivals else 0.0
    hours = max(replay.window_s, last) / 3600.0
    note = (
        f"Workload replayed from a database: {len(replay.arrivals)} tasks created in the "
        f"{replay.window_s / 3600:g} h up to its newest task ({replay.recorded_work} with a recorded run time)."
    )
    kept = scenario.description[: 4000 - len(note) - 2]
    description = f"{kept}\n\n{note}" if kept else note
    return scenario.model_copy(
        update={
            "duration_hours": hours,
            "description": description,
            "workload": RecordedWorkload.of(scenario.workload, replay.arrivals),
        }
    )


def read_replay(url: str, since_s: float, scenario: Scenario) -> Replay:
    """The tasks of the ``since_s`` seconds up to the newest task in the database at ``url``, as arrivals."""
    parsed = _parsed(url)
    with _reading(parsed) as conn:
        rows, runs, window_start = _read(conn, since_s, parsed, scenario)
    return _arrivals(rows, runs, window_start, since_s, scenario)


def _read(
    conn: Connection, since_s: float, parsed: URL, scenario: Scenario
) -> tuple[Sequence[Any], dict[str, float], datetime]:
    try:
        newest = conn.execute(select(func.max(tasks.c.created_at))).scalar_one()
        if newest is None:
            raise ScenarioError("--from-db: the database holds no tasks")
        start: datetime = newest - timedelta(seconds=since_s)
        window = (tasks.c.created_at >= start) & (tasks.c.created_at <= newest)
        count = conn.execute(select(func.count()).select_from(tasks).where(window)).scalar_one()
        if count > MAX_REPLAY_TASKS:
            raise ScenarioError(
                f"--since: the window holds {count} tasks, more than the {MAX_REPLAY_TASKS} a replay takes;"
                " give a shorter one"
            )
        columns = (tasks.c.id, tasks.c.tenant, tasks.c.kind, tasks.c.priority, tasks.c.data_sensitivity)
        rows = conn.execute(
            select(*columns, tasks.c.deadline_seconds, tasks.c.created_at)
            .where(window)
            .order_by(tasks.c.created_at, tasks.c.id)
        ).all()
        runs = _run_times(conn, window, scenario)
    except ScenarioError:
        raise
    except SQLAlchemyError as exc:
        raise ScenarioError(f"--from-db: cannot read the tasks ({_driver_message(exc, parsed)})") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a stored value the store never writes (a time, a number)
        kind = type(exc).__name__
        raise ScenarioError(f"--from-db: cannot read the tasks (a stored value is malformed: {kind})") from None
    return rows, runs, start


def _run_times(conn: Connection, window: Any, scenario: Scenario) -> dict[str, float]:
    """Task id -> the work its succeeded attempt did: seconds from running to succeeded, times the type's speed."""
    rows = conn.execute(
        select(
            attempts.c.task_id,
            attempts.c.id,
            attempts.c.provider,
            attempts.c.region,
            attempts.c.instance_type,
            events.c.to_state,
            events.c.at,
        )
        .join(tasks, tasks.c.id == attempts.c.task_id)
        .join(events, events.c.attempt_id == attempts.c.id)
        .where(
            window,
            attempts.c.state == "succeeded",
            events.c.kind == "attempt.transition",
            events.c.to_state.in_(("running", "succeeded")),
        )
        .order_by(attempts.c.task_id, attempts.c.number, events.c.id)
    ).all()
    began: dict[str, datetime] = {}
    runs: dict[str, float] = {}
    for row in rows:
        if row.to_state == "running":
            began.setdefault(row.id, row.at)
        elif row.id in began and row.task_id not in runs:
            seconds = (row.at - began[row.id]).total_seconds()
            if math.isfinite(seconds) and seconds > 0:
                runs[row.task_id] = seconds * _speed(scenario, row.provider, row.region, row.instance_type)
    return runs


def _speed(scenario: Scenario, provider: str, region: str | None, instance_type: str | None) -> float:
    """The scenario's speed of ``instance_type`` (its market's, else any market's of that cloud), else 1.0."""
    if instance_type is None:
        return 1.0
    clouds = scenario.world.clouds
    for cloud in sorted(clouds, key=lambda c: (c.provider, c.region) != (provider, region)):
        if cloud.provider == provider and instance_type in cloud.speed:
            return cloud.speed[instance_type]
    return 1.0


def _arrivals(
    rows: Sequence[Any], runs: dict[str, float], window_start: datetime, since_s: float, scenario: Scenario
) -> Replay:
    workload = scenario.workload
    draws = np.random.Generator(np.random.PCG64(scenario.seed)).random(len(rows))
    made: list[Arrival] = []
    previous = -math.inf
    for number, (row, u) in enumerate(zip(rows, draws, strict=True)):
        spec = _spec(row, number, scenario)
        work_s = runs.get(row.id)
        if work_s is None:
            work = workload.work.get(spec.kind.value)
            if work is None:
                raise ScenarioError(f"workload.work: no work range for kind {spec.kind.value!r} (a replayed task)")
            # log-uniform over the kind's range, as a drawn day's work (simulator.workload)
            work_s = math.exp(math.log(work.min_s) + float(u) * (math.log(work.max_s) - math.log(work.min_s)))
        at_s = (row.created_at - window_start).total_seconds()
        at_s = max(at_s, previous + _MIN_GAP_S, 0.0)
        previous = at_s
        segment = workload.segment_s if spec.kind is TaskKind.VIDEO else None
        made.append(Arrival(number=number, at_s=at_s, spec=spec, work_s=work_s, segment_s=segment))
    recorded_work = sum(1 for row in rows if row.id in runs)
    return Replay(arrivals=tuple(made), window_s=since_s, recorded_work=recorded_work)


def _spec(row: Row[Any], number: int, scenario: Scenario) -> TaskSpec:
    """The simulated task: the recorded kind, tenant, priority, sensitivity and deadline; the scenario's URIs."""
    where = f"--from-db: task {_shown(row.id)}"
    if not is_tenant_name(row.tenant):
        raise ScenarioError(f"{where}: its tenant is not a tenant name")
    try:
        kind, priority = TaskKind(row.kind), Priority(row.priority)
        sensitivity = DataSensitivity(row.data_sensitivity)
    except ValueError:
        raise ScenarioError(f"{where}: its kind, priority or data sensitivity is not one the simulator knows") from None
    deadline = row.deadline_seconds
    if deadline is not None and not (isinstance(deadline, int) and deadline >= 1):
        raise ScenarioError(f"{where}: its deadline is not a positive number of seconds")
    workload = scenario.workload
    fill = {"tenant": row.tenant, "n": str(number)}
    return TaskSpec(
        tenant=row.tenant,
        kind=kind,
        source_uri=workload.source_uri.format_map(fill),
        target_uri=workload.target_uri.format_map(fill),
        output_uri=workload.output_uri.format_map(fill),
        priority=priority,
        data_sensitivity=sensitivity,
        deadline_seconds=deadline,
        labels={"sim": "1"},
    )


# -- the database, read-only ----------------------------------------------------------------------


def _parsed(url: str) -> URL:
    try:
        return normalize_url(url.strip())
    except (ArgumentError, ValueError):
        # the text itself is never shown: it may hold a password
        raise ScenarioError(
            "--from-db: not a database URL the store reads (sqlite:////path/to.db or postgresql+psycopg://...)"
        ) from None


def read_only(url: str) -> AbstractContextManager[Connection]:
    """A connection to the database at ``url`` that cannot write; ``ScenarioError`` naming ``--from-db``."""
    return _reading(_parsed(url))


@contextmanager
def _reading(parsed: URL) -> Iterator[Connection]:
    engine = _read_only_engine(parsed)
    try:
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:
            raise ScenarioError(f"--from-db: cannot connect ({_driver_message(exc, parsed)})") from None
        with conn:
            yield conn
    finally:
        engine.dispose()


def _read_only_engine(parsed: URL) -> Engine:
    """An engine that cannot write: SQLite opened ``mode=ro`` (never created), PostgreSQL read-only sessions."""
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
            raise ScenarioError("--from-db: a SQLite URL must name a database file (sqlite:////path/to.db)")
        path = Path(parsed.database).expanduser()
        if not path.is_file():
            raise ScenarioError("--from-db: no SQLite database file at that path")
        uri = f"{path.resolve().as_uri()}?mode=ro"

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, check_same_thread=False)

        return create_engine("sqlite+pysqlite://", creator=connect, poolclass=NullPool)
    try:
        return create_engine(
            parsed,
            poolclass=NullPool,
            connect_args={"options": "-c default_transaction_read_only=on", "connect_timeout": _CONNECT_TIMEOUT_S},
        )
    except Exception as exc:  # a missing driver, a bad option: say which, not the URL
        raise ScenarioError(f"--from-db: cannot open the database ({type(exc).__name__})") from None


def _driver_message(exc: SQLAlchemyError, parsed: URL) -> str:
    """The database's own words (its first line), with any password in the URL blanked out, or the error's kind."""
    original = getattr(exc, "orig", None)
    text = str(original).strip().splitlines()[0] if original is not None and str(original).strip() else ""
    secrets = [value for value in (parsed.password, *_query_passwords(parsed)) if value]
    for secret in secrets:
        text = text.replace(str(secret), "***")
    return _shown(text, limit=200) if text else type(exc).__name__


def _query_passwords(parsed: URL) -> list[str]:
    found: list[str] = []
    for key, value in parsed.query.items():
        if key.lower() in ("password", "passfile", "sslpassword"):
            found.extend([value] if isinstance(value, str) else list(value))
    return found


def _shown(text: str, *, limit: int = 40) -> str:
    """``text`` as an ASCII literal, cut short: safe to print whatever it holds."""
    return ascii(text if len(text) <= limit else text[:limit] + "...")
