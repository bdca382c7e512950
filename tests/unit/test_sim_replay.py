"""A workload replayed from a FusionPlane database (``fusionctl sim run --from-db``): which tasks, when, and what.

The database is made by the real store under a virtual clock (tests/support/sim_db.py), so each task's
``created_at`` and its attempt's events sit exactly where the test puts them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from simulator.replay import parse_since, read_replay, replayed
from simulator.scenario import Scenario, ScenarioError, parse_scenario
from simulator.workload import RecordedWorkload, arrivals
from tests.support.sim import small_scenario
from tests.support.sim_db import Recorded, recorded_database

HOUR = 3600.0


def scenario(seed: int = 11) -> Scenario:
    document: dict[str, Any] = small_scenario()
    document["seed"] = seed
    document["world"]["clouds"][0]["speed"] = {"gpu.x": 2.0}
    return parse_scenario(document)


#: a morning's tasks: one before the window of the last two hours, the rest in it
TASKS = [
    Recorded(at_s=0.0, tenant="early"),
    Recorded(at_s=2 * HOUR, priority="urgent", deadline_s=300, ran=(2 * HOUR + 10, 42.5)),
    Recorded(at_s=2 * HOUR + 60, kind="video", sensitivity="private", tenant="globex", ran=(2 * HOUR + 70, 600)),
    Recorded(
        at_s=3 * HOUR, priority="low", sensitivity="internal", ran=(3 * HOUR + 5, 10), instance=("aws", "r1", "gpu.x")
    ),
    Recorded(at_s=3 * HOUR + 1800, kind="video", tenant="initech"),
    Recorded(at_s=4 * HOUR, priority="high", deadline_s=1800, labels={"campaign": "launch"}),
]


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return recorded_database(tmp_path_factory.mktemp("replay") / "fusionplane.db", TASKS)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90m", 5400.0), ("24h", 86400.0), ("2d", 172800.0), ("45s", 45.0), (" 1h ", 3600.0)]
)
def test_since_reads_a_whole_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


def test_the_window_ends_at_the_newest_task_and_offsets_count_from_its_start(database: str) -> None:
    replay = read_replay(database, 2 * HOUR, scenario())
    assert replay.window_s == 2 * HOUR
    # the newest task is at 4 h: the window is [2 h, 4 h]; the first task (at 0 h) is outside it
    assert [a.at_s for a in replay.arrivals] == [0.0, 60.0, HOUR, HOUR + 1800, 2 * HOUR]
    assert [a.number for a in replay.arrivals] == [0, 1, 2, 3, 4]
    assert "early" not in {a.spec.tenant for a in replay.arrivals}
    everything = read_replay(database, 90 * 60 * 60, scenario())
    assert len(everything.arrivals) == len(TASKS)
    assert everything.arrivals[0].at_s == 90 * HOUR - 4 * HOUR


def test_each_arrival_keeps_its_recorded_kind_tenant_priority_sensitivity_and_deadline(database: str) -> None:
    replay = read_replay(database, 2 * HOUR, scenario())
    mix = [
        (
            a.spec.kind.value,
            a.spec.tenant,
            a.spec.priority.value,
            a.spec.data_sensitivity.value,
            a.spec.deadline_seconds,
        )
        for a in replay.arrivals
    ]
    assert mix == [
        ("image", "acme", "urgent", "public", 300),
        ("video", "globex", "normal", "private", None),
        ("image", "acme", "low", "internal", None),
        ("video", "initech", "normal", "public", None),
        ("image", "acme", "high", "public", 1800),
    ]
    # videos checkpoint as the scenario says; images start over
    assert [a.segment_s for a in replay.arrivals] == [None, 30.0, None, 30.0, None]


def test_the_tenants_uris_and_labels_stay_in_the_database(database: str) -> None:
    replay = read_replay(database, 2 * HOUR, scenario())
    for arrival in replay.arrivals:
        spec = arrival.spec
        assert "secret" not in f"{spec.source_uri} {spec.target_uri} {spec.output_uri}"
        assert spec.source_uri == f"https://media.example/{spec.tenant}/{arrival.number}/face.png"
        assert spec.output_uri == f"/srv/out/{spec.tenant}/{arrival.number}.png"
        assert dict(spec.labels) == {"sim": "1"}


def test_work_is_the_succeeded_attempts_run_time_else_a_seeded_draw_from_the_kinds_range(database: str) -> None:
    replay = read_replay(database, 2 * HOUR, scenario())
    work = [a.work_s for a in replay.arrivals]
    assert work[0] == pytest.approx(42.5)  # ran 42.5 s on the private cluster (speed 1)
    assert work[1] == pytest.approx(600.0)
    assert work[2] == pytest.approx(20.0)  # 10 s on gpu.x, twice the reference GPU
    assert 300 <= work[3] <= 900  # a video with no run: drawn from workload.work.video
    assert 20 <= work[4] <= 60
    assert replay.recorded_work == 3
    again = read_replay(database, 2 * HOUR, scenario())
    assert [a.work_s for a in again.arrivals] == work  # the same seed draws the same
    other = read_replay(database, 2 * HOUR, scenario(seed=12))
    assert [a.work_s for a in other.arrivals][:3] == work[:3]
    assert [a.work_s for a in other.arrivals][3:] != work[3:]


def test_the_replay_is_the_runs_workload_and_its_window_the_runs_duration(database: str) -> None:
    base = scenario()
    replay = read_replay(database, 2 * HOUR, base)
    run = replayed(base, replay)
    assert isinstance(run.workload, RecordedWorkload)
    assert run.duration_hours == 2.0
    assert run.world == base.world
    assert (run.start, run.seed) == (base.start, base.seed)
    given = list(arrivals(run.workload, seed=run.seed, until_s=run.end_s))
    assert given == list(replay.arrivals)  # the scenario's rate (240 an hour) is not used
    assert "Workload replayed from a database: 5 tasks" in run.description
    assert "secret" not in run.model_dump_json()


def test_tasks_of_one_millisecond_are_spaced_a_millisecond_apart_in_creation_order(tmp_path: Path) -> None:
    url = recorded_database(tmp_path / "burst.db", [Recorded(at_s=10.0, tenant=f"t{i}") for i in range(4)])
    replay = read_replay(url, HOUR, scenario())
    assert [a.at_s for a in replay.arrivals] == pytest.approx([HOUR, HOUR + 0.001, HOUR + 0.002, HOUR + 0.003])
    assert [a.spec.tenant for a in replay.arrivals] == ["t0", "t1", "t2", "t3"]
    run = replayed(scenario(), replay)
    assert run.end_s == pytest.approx(HOUR + 0.003)  # the window, stretched to hold the last one
    assert len(list(arrivals(run.workload, seed=run.seed, until_s=run.end_s))) == 4


def test_the_database_is_only_read(database: str) -> None:
    path = Path(database.removeprefix("sqlite:///"))
    before = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode
    read_replay(database, 2 * HOUR, scenario())
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode) == before


def test_an_empty_database_is_refused_naming_the_option(tmp_path: Path) -> None:
    url = recorded_database(tmp_path / "empty.db", [])
    with pytest.raises(ScenarioError, match=r"^--from-db: the database holds no tasks$"):
        read_replay(url, HOUR, scenario())


def test_a_kind_without_a_work_range_is_refused_naming_the_field(tmp_path: Path) -> None:
    url = recorded_database(tmp_path / "video.db", [Recorded(at_s=0.0, kind="video")])
    document = small_scenario(work={"image": {"min_s": 1, "max_s": 2}})
    with pytest.raises(ScenarioError, match=r"^workload\.work: no work range for kind 'video'"):
        read_replay(url, HOUR, parse_scenario(document))
