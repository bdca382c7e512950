"""The deadline rule: spot while the slack allows, on-demand or private once it runs out.

For a rule with ``deadline_aware: true`` and the policy's ``deadlines``
section (docs/policies.md, "Deadlines"):

- the task's deadline is its ``deadline_seconds``, else the SLA of its
  priority (``deadlines.sla_seconds``), else it has none;
- its slack is ``deadline - (now - submitted) - work`` (``estimates``);
- while ``slack >= deadlines.restart_overhead_seconds``, a spot try can
  still fail and be replaced in time: spot and the queue are used, and
  on-demand candidates are held back (rejected ``deadline_slack``, naming
  the moment they become usable: the plan's ``replan_by``);
- below it, on-demand and private candidates come before spot ones (spot
  stays as the last resort), each with the numbers that moved it;
- a task without a deadline never needs on-demand: held back for good.

This is Uniform Progress (Can't Be Late, NSDI '24) for jobs too short to
switch halfway: the decision is taken per try, at each plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from controlplane.domain import ON_DEMAND, SPOT, Rejection, Task
from controlplane.policy.model import DeadlineRule, Estimates

__all__ = ["Slack", "held_back", "is_spot", "moved_reason", "slack_of"]


@dataclass(frozen=True, slots=True)
class Slack:
    """The numbers the rule decided on, as the receipt shows them."""

    deadline_s: float | None
    elapsed_s: float
    work_s: float
    overhead_s: float

    @property
    def slack_s(self) -> float | None:
        if self.deadline_s is None:
            return None
        return self.deadline_s - self.elapsed_s - self.work_s

    @property
    def tight(self) -> bool:
        """Whether on-demand and private go before spot now."""
        slack = self.slack_s
        return slack is not None and slack < self.overhead_s

    def numbers(self) -> str:
        if self.deadline_s is None:
            return "no deadline"
        return (
            f"slack {self.slack_s:.0f} s = deadline {self.deadline_s:g} s - {self.elapsed_s:.0f} s since submitted "
            f"- work {self.work_s:g} s, restart overhead {self.overhead_s:g} s"
        )

    def usable_from(self, submitted: datetime) -> datetime | None:
        """When on-demand stops being held back (the slack falls below the overhead); None without a deadline."""
        if self.deadline_s is None:
            return None
        return submitted + timedelta(seconds=self.deadline_s - self.work_s - self.overhead_s)


def slack_of(task: Task, rule: DeadlineRule, estimates: Estimates, now: datetime) -> Slack:
    spec = task.spec
    deadline = (
        float(spec.deadline_seconds) if spec.deadline_seconds is not None else rule.sla_seconds.get(spec.priority)
    )
    return Slack(
        deadline_s=deadline,
        elapsed_s=max((now - task.created_at).total_seconds(), 0.0),
        work_s=estimates.work(spec.kind),
        overhead_s=rule.restart_overhead_seconds,
    )


def held_back(target: str, slack: Slack, usable_from: datetime | None) -> Rejection:
    """The rejection of an on-demand candidate the slack does not need yet."""
    if usable_from is None:
        detail = "deadline rule: the task has no deadline, so on-demand is never needed (spot or the queue)"
    else:
        detail = (
            f"deadline rule: {slack.numbers()}: spot or the queue until {usable_from.isoformat(timespec='seconds')}"
        )
    return Rejection(target=target, code="deadline_slack", detail=detail)


def moved_reason(slack: Slack, market: str | None) -> str:
    what = "on-demand" if market == ON_DEMAND else "private"
    return f"deadline rule: {slack.numbers()}: {what} before spot"


def is_spot(market: str | None) -> bool:
    return market == SPOT
