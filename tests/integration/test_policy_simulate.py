"""``fusionctl policy simulate``: decisions recorded by the real scheduler, replayed under another policy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from controlplane.cli.policy import policy as policy_cli
from controlplane.domain import DataSensitivity, SignalSample, SignalSnapshot, TaskKind, TaskSpec
from controlplane.policy import Policy, parse_policy
from controlplane.policy_sources import PolicySet
from controlplane.scheduler import Scheduler
from controlplane.store import Store, make_engine, upgrade
from providers.noop import NoopProvider

TARGETS = [
    {"name": "local", "provider": "local", "private": True},
    {"name": "aws", "provider": "aws", "private": False, "regions": ["us-east-1"], "instance_types": ["g5.xlarge"]},
]
LOCAL_FIRST = {"targets": TARGETS, "rules": [{"name": "local-first", "targets": ["local", "aws"]}]}
CLOUD_FOR_PUBLIC = {
    "targets": TARGETS,
    "rules": [
        {"name": "public-to-cloud", "match": {"data_sensitivity": "public"}, "targets": ["aws", "local"]},
        {"name": "rest-local", "targets": ["local"]},
    ],
}
PRICE = 0.5

# fixtures: a session PostgreSQL and `database_url` on both databases (the replay reads JSON in SQL)
pytest_plugins = ["tests.integration.store_fixtures"]


class RecordingScheduler(Scheduler):
    """The real scheduler with a fixed snapshot (free local GPUs and one fresh AWS spot price)."""

    def snapshot(self, policy: Policy | PolicySet) -> SignalSnapshot:
        now = self.clock()
        samples = {
            "free_gpus/local": SignalSample(source="free_gpus", key="local", value=4, observed_at=now, ttl_seconds=60),
            "spot_price/aws/us-east-1/g5.xlarge": SignalSample(
                source="spot_price", key="aws/us-east-1/g5.xlarge", value=PRICE, observed_at=now, ttl_seconds=600
            ),
        }
        return SignalSnapshot(taken_at=now, samples=samples)


@pytest.fixture
def database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Store, str]]:
    engine = make_engine(database_url)
    upgrade(engine=engine)
    monkeypatch.setenv("FUSIONPLANE_DATABASE_URL", database_url)
    yield Store(engine), database_url
    engine.dispose()


def submit(store: Store, n: int, sensitivity: DataSensitivity, *, deadline: int | None = None) -> list[str]:
    ids = []
    for i in range(n):
        task, _ = store.create_task(
            spec=TaskSpec(
                tenant="acme",
                kind=TaskKind.IMAGE,
                source_uri="s3://in/f.png",
                target_uri="s3://in/t.png",
                output_uri=f"s3://out/{sensitivity}-{i}.png",
                data_sensitivity=sensitivity,
                deadline_seconds=deadline,
            ),
            request_hash=f"{sensitivity}-{i}-{deadline}",
        )
        ids.append(task.id)
    return ids


def place(store: Store) -> None:
    scheduler = RecordingScheduler(
        store=store,
        policy=lambda: parse_policy(LOCAL_FIRST),
        providers={"local": NoopProvider(name="local"), "aws": NoopProvider(name="aws")},
        callback_base="http://127.0.0.1:1",
        checkpoint_root=None,
        scheduler_id="test",
    )
    while scheduler.place_batch():
        pass


def simulate(tmp_path: Path, document: Any, *args: str) -> dict[str, Any]:
    path = tmp_path / "candidate.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    result = CliRunner().invoke(policy_cli, ["simulate", str(path), "--output", "json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_replay_counts_moves_and_estimates_the_cost(database: tuple[Store, str], tmp_path: Path) -> None:
    store, _url = database
    submit(store, 3, DataSensitivity.PUBLIC)
    submit(store, 1, DataSensitivity.PUBLIC, deadline=3600)
    submit(store, 2, DataSensitivity.PRIVATE)
    place(store)

    same = simulate(tmp_path, LOCAL_FIRST)
    assert same["replayed"] == 6
    assert same["changed"] == 0  # the recorded policy, replayed on recorded signals, decides the same

    report = simulate(tmp_path, CLOUD_FOR_PUBLIC)
    assert report["replayed"] == 6
    assert report["changed"] == 4
    assert report["moves"] == [{"from": "local", "to": "aws", "count": 4}]
    # 3 tasks at the assumed 600 s and one at its 3600 s deadline, all at the recorded spot price
    hours = 3 * 600 / 3600 + 1.0
    assert report["cost"]["before_usd"] == 0.0
    assert report["cost"]["after_usd"] == pytest.approx(PRICE * hours, abs=1e-4)
    assert report["cost"]["assumed_runtimes"] == 4
    assert report["skipped_without_snapshot"] == 0


def test_last_and_since_select_the_window(database: tuple[Store, str], tmp_path: Path) -> None:
    store, _url = database
    submit(store, 5, DataSensitivity.PUBLIC)
    place(store)
    assert simulate(tmp_path, CLOUD_FOR_PUBLIC, "--last", "2")["replayed"] == 2
    assert simulate(tmp_path, CLOUD_FOR_PUBLIC, "--since", "1h")["replayed"] == 5


def test_decisions_without_a_snapshot_are_counted_not_guessed(database: tuple[Store, str], tmp_path: Path) -> None:
    store, _url = database
    [task_id] = submit(store, 1, DataSensitivity.PUBLIC)
    from controlplane.domain import Candidate, PlacementPlan

    store.record_decision(
        plan=PlacementPlan(
            task_id=task_id,
            policy_version="v0",
            decided_at=datetime.now(UTC) - timedelta(minutes=5),
            candidates=(Candidate(target="local", provider="local", private=True),),
            rejections=(),
        )
    )
    report = simulate(tmp_path, CLOUD_FOR_PUBLIC)
    assert report["replayed"] == 0
    assert report["skipped_without_snapshot"] == 1


def test_bad_arguments_exit_65(database: tuple[Store, str], tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(LOCAL_FIRST), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(policy_cli, ["simulate", str(path), "--since", "yesterday"])
    assert result.exit_code == 65
    assert "--since" in result.output
    result = runner.invoke(policy_cli, ["simulate", str(path), "--since", "1h", "--last", "3"])
    assert result.exit_code == 65
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"targets": [{"name": "x", "provider": "gcp", "private": False}]}), encoding="utf-8")
    result = runner.invoke(policy_cli, ["simulate", str(bad)])
    assert result.exit_code == 65
    assert "targets[0].provider" in result.output
