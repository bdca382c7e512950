"""The policy's placement economics: ``estimates``, ``deadlines`` and ``spot_risk`` (docs/policies.md).

Each section is optional; a missing field keeps its documented default.
"""

from __future__ import annotations

from typing import Any

from controlplane.domain import PROVIDERS, Priority, TaskKind
from controlplane.policy.model import DeadlineRule, Estimates, PolicyError, SpotRisk
from controlplane.policy.parse_fields import json_object, number

__all__ = ["RANKS", "parse_deadlines", "parse_estimates", "parse_rank", "parse_spot_risk"]

#: a rule's ``rank``: the rule's own target order, or expected dollars per completed task
RANKS = ("order", "expected_cost")
#: a day: no estimate or overhead the language accepts is longer
_DAY_S = 86400.0


def _per_key(value: Any, path: str, allowed: tuple[str, ...], *, low: float) -> dict[str, float]:
    raw = json_object(value, path, frozenset(allowed))
    return {key: number(item, f"{path}.{key}", low=low, high=_DAY_S * 7) for key, item in raw.items()}


def parse_estimates(value: Any) -> Estimates:
    """``estimates``: work per task kind and launch overhead per provider, in seconds."""
    raw = json_object(value, "estimates", frozenset({"work_seconds", "launch_overhead_seconds"}))
    defaults = Estimates()
    work = dict(defaults.work_seconds)
    if "work_seconds" in raw:
        work.update(_per_key(raw["work_seconds"], "estimates.work_seconds", tuple(TaskKind), low=0))
    overhead = dict(defaults.launch_overhead_seconds)
    if "launch_overhead_seconds" in raw:
        path = "estimates.launch_overhead_seconds"
        overhead.update(_per_key(raw["launch_overhead_seconds"], path, PROVIDERS, low=0))
    return Estimates(work_seconds=work, launch_overhead_seconds=overhead)


def parse_deadlines(value: Any) -> DeadlineRule:
    """``deadlines``: the SLA per priority and the restart overhead of the deadline rule."""
    raw = json_object(value, "deadlines", frozenset({"sla_seconds", "restart_overhead_seconds"}))
    sla = _per_key(raw.get("sla_seconds", {}), "deadlines.sla_seconds", tuple(Priority), low=1)
    overhead = DeadlineRule().restart_overhead_seconds
    if "restart_overhead_seconds" in raw:
        overhead = number(raw["restart_overhead_seconds"], "deadlines.restart_overhead_seconds", low=0, high=_DAY_S)
    return DeadlineRule(sla_seconds=sla, restart_overhead_seconds=overhead)


def parse_spot_risk(value: Any) -> SpotRisk:
    """``spot_risk``: the cold-start priors of the learned spot risk."""
    keys = ("prior_refusal_rate", "prior_launches", "prior_hours_between_preemptions", "prior_hours", "history_hours")
    raw = json_object(value, "spot_risk", frozenset(keys))
    defaults = SpotRisk()
    rate = raw.get("prior_refusal_rate", defaults.prior_refusal_rate)
    launches = raw.get("prior_launches", defaults.prior_launches)
    between = raw.get("prior_hours_between_preemptions", defaults.prior_hours_between_preemptions)
    hours = raw.get("prior_hours", defaults.prior_hours)
    window = raw.get("history_hours", defaults.history_hours)
    return SpotRisk(
        prior_refusal_rate=number(rate, "spot_risk.prior_refusal_rate", low=0, high=0.99),
        # at least one pseudo-observation each: a prior of zero weight would divide by zero on a cold start
        prior_launches=number(launches, "spot_risk.prior_launches", low=1, high=1e6),
        prior_hours_between_preemptions=number(between, "spot_risk.prior_hours_between_preemptions", low=0.01),
        prior_hours=number(hours, "spot_risk.prior_hours", low=0.01, high=1e6),
        history_hours=number(window, "spot_risk.history_hours", low=0.01, high=24 * 90),
    )


def parse_rank(value: Any, path: str) -> str:
    if value not in RANKS:
        raise PolicyError(path, f"must be one of {', '.join(RANKS)}")
    return str(value)
