"""``plan()``: the pure placement function.

Evaluation order (the minimal language; the policy-engine issue grows it):

1. **Private data, built in.** A task whose ``data_sensitivity`` is
   ``private`` never gets a non-private candidate: every non-private target
   is rejected ``private_data``, whatever the rules say.
2. **Rules, first match wins.** Rules are tried in document order; a rule
   matches when each of its ``match`` fields (priority, data_sensitivity,
   kind, tenant) is absent or contains the task's value. The matching rule's
   ``targets`` give the preference order (empty: every target in document
   order); targets it does not list, or lists in ``exclude``, are rejected
   ``excluded_by_rule``. When no rule matches, the implicit default rule
   offers every target in document order.
3. **Capacity.** A target whose ``capacity/<target>`` signal is fresh and
   shows no free slot is rejected ``no_capacity``. A stale or missing signal
   is recorded in ``signals_used`` (with its age) and is never a reason to
   choose or reject.

Every target ends up exactly once, either as a candidate or as a rejection.
No clock, no I/O, no globals: the same inputs give an equal plan.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controlplane.domain import (
    Candidate,
    DataSensitivity,
    PlacementPlan,
    Rejection,
    SignalSnapshot,
    Target,
    Task,
)
from controlplane.policy.model import Policy, Rule

__all__ = ["CAPACITY_SOURCE", "DEFAULT_RULE", "plan"]

#: the signal source whose ``<target>`` key holds a target's free slots
CAPACITY_SOURCE = "capacity"
#: the name the trace gives the implicit fallback rule
DEFAULT_RULE = "default"


def _mismatch(rule: Rule, task: Task) -> str | None:
    """Why ``rule`` does not match ``task`` (``None`` when it matches)."""
    spec = task.spec
    match = rule.match
    if match.priority and spec.priority not in match.priority:
        return f"priority {spec.priority.value} not in [{', '.join(p.value for p in match.priority)}]"
    if match.data_sensitivity and spec.data_sensitivity not in match.data_sensitivity:
        wanted = ", ".join(s.value for s in match.data_sensitivity)
        return f"data_sensitivity {spec.data_sensitivity.value} not in [{wanted}]"
    if match.kind and spec.kind not in match.kind:
        return f"kind {spec.kind.value} not in [{', '.join(k.value for k in match.kind)}]"
    if match.tenant and spec.tenant not in match.tenant:
        return f"tenant {spec.tenant!r} not in [{', '.join(match.tenant)}]"
    return None


def _matched_on(rule: Rule) -> str:
    parts = [
        f"{field_name} in [{', '.join(str(v) for v in values)}]"
        for field_name, values in (
            ("priority", rule.match.priority),
            ("data_sensitivity", rule.match.data_sensitivity),
            ("kind", rule.match.kind),
            ("tenant", rule.match.tenant),
        )
        if values
    ]
    return " and ".join(parts) if parts else "matches any task"


def plan(task: Task, snapshot: SignalSnapshot, policy: Policy, now: datetime) -> PlacementPlan:
    """Decide where ``task`` may run, best first, and say why for every target.

    Pure and deterministic: it reads only its arguments (``now`` is the
    decision time, used for signal ages) and returns plain data.
    """
    trace: list[str] = []
    chosen: Rule | None = None
    for rule in policy.rules:
        if chosen is not None:
            trace.append(f"rule {rule.name}: not evaluated (rule {chosen.name} matched first)")
            continue
        why_not = _mismatch(rule, task)
        if why_not is None:
            chosen = rule
            trace.append(f"rule {rule.name}: matched ({_matched_on(rule)})")
        else:
            trace.append(f"rule {rule.name}: no match ({why_not})")

    by_name = {target.name: target for target in policy.targets}
    all_names = list(by_name)
    if chosen is None:
        rule_name = DEFAULT_RULE
        trace.append(f"rule {DEFAULT_RULE}: no rule matched; every target in document order")
        order = all_names
        excluded: dict[str, str] = {}
    else:
        rule_name = chosen.name
        order = list(chosen.targets) if chosen.targets else all_names
        excluded = {name: f"rule {rule_name} does not list it" for name in all_names if name not in order}
        for name in chosen.exclude:
            excluded[name] = f"rule {rule_name} excludes it"
        order = [name for name in order if name not in excluded]

    private_task = task.spec.data_sensitivity is DataSensitivity.PRIVATE
    rejected: dict[str, Rejection] = {}
    signals_used: dict[str, Any] = {}
    candidates: list[Candidate] = []

    # 1. the built-in private-data rule comes before anything a policy says
    for target in policy.targets:
        if private_task and not target.private:
            rejected[target.name] = Rejection(
                target=target.name,
                code="private_data",
                detail="the task's data is private and this target is not (built-in rule, not a policy choice)",
            )
    # 2. the rule's exclusions
    for name, detail in excluded.items():
        if name not in rejected:
            rejected[name] = Rejection(target=name, code="excluded_by_rule", detail=detail)
    # 3. capacity, for the targets still in the running, in preference order
    for rank, name in enumerate(order, start=1):
        if name in rejected:
            continue
        # parse_policy checked that every name a rule lists is a target
        target = by_name[name]
        rejection, capacity_reason = _capacity(target, snapshot, now, signals_used, trace)
        if rejection is not None:
            rejected[name] = rejection
            continue
        reasons = [
            f"rule {rule_name} ranks it {rank} of {len(order)}"
            if chosen is not None and chosen.targets
            else f"rule {rule_name}: document order, position {all_names.index(name) + 1}"
        ]
        if private_task:
            reasons.append("private target for private data")
        if capacity_reason:
            reasons.append(capacity_reason)
        candidates.append(
            Candidate(
                target=name,
                provider=target.provider,
                private=target.private,
                region=target.regions[0] if target.regions else None,
                instance_type=target.instance_types[0] if target.instance_types else None,
                max_price_usd_h=target.max_price_usd_h,
                reasons=tuple(reasons),
            )
        )

    if not candidates:
        trace.append("no candidate: every target was rejected")
    return PlacementPlan(
        task_id=task.id,
        policy_version=policy.version,
        decided_at=now,
        candidates=tuple(candidates),
        # in document order, so the receipt reads the same way as the policy
        rejections=tuple(rejected[name] for name in all_names if name in rejected),
        trace=tuple(trace),
        signals_used=signals_used,
    )


def _capacity(
    target: Target, snapshot: SignalSnapshot, now: datetime, signals_used: dict[str, Any], trace: list[str]
) -> tuple[Rejection | None, str | None]:
    key = f"{CAPACITY_SOURCE}/{target.name}"
    sample = snapshot.get(CAPACITY_SOURCE, target.name)
    if sample is None:
        signals_used[key] = {"value": None, "age_seconds": None, "stale": True, "missing": True}
        trace.append(f"signal {key}: missing; capacity of {target.name} unknown, not used")
        return None, None
    age = round(sample.age_seconds(now), 3)
    stale = sample.is_stale(now)
    signals_used[key] = {
        "value": sample.value,
        "age_seconds": age,
        "ttl_seconds": sample.ttl_seconds,
        "stale": stale,
        "missing": False,
    }
    if stale:
        trace.append(f"signal {key}: stale ({age}s old, ttl {sample.ttl_seconds}s); not used")
        return None, None
    if sample.value <= 0:
        detail = f"no free slot: {key} = {sample.value:g} ({age}s old)"
        return Rejection(target=target.name, code="no_capacity", detail=detail), None
    return None, f"{sample.value:g} free ({key}, {age}s old)"
