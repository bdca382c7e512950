"""The scheduler stays split by job: a small facade over placing, following and releasing, no long function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SCHEDULER = Path(__file__).resolve().parents[2] / "controlplane" / "scheduler"
#: the facade only puts the jobs together; each job's module stays well under the project's ~600 lines
LIMITS = {"executor.py": 80, "base.py": 300, "placing.py": 600, "following.py": 400, "releasing.py": 200}
MAX_FUNCTION_LINES = 100


@pytest.mark.parametrize(("name", "limit"), sorted(LIMITS.items()))
def test_each_module_of_the_split_stays_small(name: str, limit: int) -> None:
    lines = len((SCHEDULER / name).read_text().splitlines())
    assert lines <= limit, f"scheduler/{name} has {lines} lines (limit {limit})"


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_no_function_of_the_split_is_over_100_lines(name: str) -> None:
    tree = ast.parse((SCHEDULER / name).read_text())
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"scheduler/{name}: {long}"


def test_the_scheduler_is_the_three_jobs_together() -> None:
    from controlplane.scheduler.executor import Scheduler
    from controlplane.scheduler.following import Following
    from controlplane.scheduler.placing import Placing
    from controlplane.scheduler.releasing import Releasing

    assert [base.__name__ for base in Scheduler.__mro__[1:4]] == ["Placing", "Following", "Releasing"]
    for job, methods in (
        (Placing, ("place_batch", "place_until_idle")),
        (Following, ("follow", "apply_final_status", "may_still_be_sending", "expire_deadlines")),
        (Releasing, ("release_finished",)),
    ):
        for method in methods:
            assert method in vars(job), f"{method} belongs to {job.__name__}"
