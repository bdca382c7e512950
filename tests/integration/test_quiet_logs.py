"""The logs of a healthy control plane say what changed, not what happens on every probe or start.

A readiness probe logs nothing, the scheduler's start does not list its jobs,
and winning the leader lease is news (INFO), not a warning; losing it stays one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from controlplane.config import ConsulSettings, Settings, SignalSettings
from controlplane.runtime import build_runtime, prepare_folders
from controlplane.scheduler.leader import Leadership
from controlplane.store import Store, downgrade, is_current, make_engine, upgrade
from tests.support.clock import Clock

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        yield eng
    finally:
        eng.dispose()


def test_the_readiness_check_of_the_schema_logs_nothing_and_still_tells(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert not is_current(engine)  # no tables at all yet
    upgrade(engine=engine)
    caplog.clear()
    for _ in range(3):
        assert is_current(engine)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []
    downgrade("-1", engine=engine)
    assert not is_current(engine)


def test_winning_or_resigning_the_lease_is_info_and_losing_it_a_warning(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade(engine=engine)
    clock = Clock(T0)
    leadership = Leadership(
        store=Store(engine, clock=clock), holder="a", lease_seconds=30, on_elected=lambda s: None, clock=clock
    )
    caplog.set_level(logging.INFO, logger="fusionplane.leader")
    assert leadership.renew()
    leadership.step_down("lease held by b")
    assert leadership.renew()
    leadership.resign()  # a clean shutdown gives the lease back: news, not a problem
    levels = [(getattr(r, "event", None), r.levelno) for r in caplog.records]
    assert levels == [
        ("leader.elected", logging.INFO),
        ("leader.deposed", logging.WARNING),
        ("leader.elected", logging.INFO),
        ("leader.resigned", logging.INFO),
    ]


def test_the_jobs_are_added_without_a_line_each_and_job_errors_still_show(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    var = tmp_path / "var"
    settings = Settings(
        var_dir=var,
        database_url=f"sqlite:///{var / 'state.db'}",
        tokens_file=var / "tokens.json",
        input_roots=(var / "inputs",),
        output_root=var / "outputs",
        public_url="http://workers.example:9000",
        signals=SignalSettings(off="kubernetes,azure_spot,aws_spot,aws_on_demand,azure_on_demand"),
        consul=ConsulSettings(),
    )
    prepare_folders(settings)
    caplog.set_level(logging.INFO)
    runtime = build_runtime(settings)
    try:
        chatter = [r.getMessage() for r in caplog.records if r.name.startswith("apscheduler")]
        assert chatter == []
        assert len(runtime.jobs.get_jobs()) > 5
        # a job that raises is logged by the executor at ERROR: that must still come through
        assert logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.ERROR)
    finally:
        runtime.engine.dispose()
