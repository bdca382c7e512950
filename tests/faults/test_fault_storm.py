"""The fault storm of the reliability issue: ``kill -9`` the control plane while 2,000 tasks run on four backends.

What runs and what is checked is in tests/faults/storm.py (the same harness
is ``python -m tests.faults.storm``). Each test prints the storm's counts as
one JSON line (run pytest with ``-s`` to see it) and fails naming every
check that did not hold:

- every task succeeded, or failed with a reason; none is left unfinished;
- no duplicate backend resource; no private task on a cloud; no orphan;
- at least 5 kills happened while tasks ran;
- with two replicas, the leader (the ``leader_lease`` holder) is the one
  killed, and the other one holds the lease within the lease time plus a
  slack.

Everything is on 127.0.0.1: a real PostgreSQL, moto's EC2, kmock's Kubernetes
API, the fake ARM, and ``fusionctl serve`` as subprocesses, all stopped by
PID at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.faults.storm import StormConfig, run_storm
from tests.support.postgres import missing_binaries

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing_binaries() is not None, reason=str(missing_binaries())),
    # a storm's own deadline (StormConfig.deadline_s) plus start, settle and teardown
    pytest.mark.timeout(420),
]

TASKS = 2000


def _storm(replicas: int, workdir: Path) -> dict[str, Any]:
    result = run_storm(StormConfig(tasks=TASKS, replicas=replicas, workdir=workdir))
    print(json.dumps(result, default=str))
    return result


def _summary(result: dict[str, Any]) -> str:
    keys = (
        "tasks_by_state",
        "open_by_cause",
        "failure_reasons",
        "duplicate_detail",
        "orphan_detail",
        "kill_log",
        "wall_s",
    )
    return "\n".join(f"{key}: {json.dumps(result.get(key), default=str)[:1500]}" for key in keys)


def test_kill_9_the_control_plane_during_a_storm_of_2000_tasks(tmp_path: Path) -> None:
    result = _storm(1, tmp_path)

    assert result["submitted"] == TASKS
    assert result["kills"] >= 5
    assert result["problems"] == [], _summary(result)


def test_two_replicas_kill_the_leader_during_a_storm_of_2000_tasks(tmp_path: Path) -> None:
    result = _storm(2, tmp_path)

    assert result["submitted"] == TASKS
    assert result["kills"] >= 5
    assert result["takeover_s"], "no takeover was measured: " + _summary(result)
    assert result["problems"] == [], _summary(result)
