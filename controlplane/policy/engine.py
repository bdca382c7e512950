"""``plan()``: the pure placement function.

Evaluation order (docs/policies.md repeats it with examples):

1. **Private data, built in.** A task whose ``data_sensitivity`` is
   ``private`` never gets a non-private candidate: every non-private target
   is rejected ``private_data``, whatever the rules or signals say.
2. **Rules, first match wins.** Rules are tried in document order. A rule
   applies when its ``match`` holds on the task (every given field contains
   the task's value) and its ``when`` holds on the signals (every given
   condition true; a stale or missing signal makes its condition false).
   When no rule applies, the implicit default rule offers every target in
   document order.
3. **The rule's actions** shape the list: ``targets`` give the order (targets
   not listed are rejected), then ``exclude``, ``require``, ``use_cloud`` and
   ``cloud_provider`` reject what they rule out (``excluded_by_rule``).
4. **Per target, in that order:** fresh ``free_gpus`` of 0 or less rejects it
   (``no_capacity``). A cloud target then needs a (region, instance type)
   whose fresh spot price is within its max price (the lower of the
   target's and the rule's); the first such pair in the target's order is
   chosen and its price is the expected $/h. A price above the max rejects
   it (``price_above_max``); with a max price but no fresh price it is
   rejected ``stale_price``: a price older than its TTL is never the reason
   to choose a cloud. Without a max price the provider's own cap applies
   (spot never costs more than on-demand), so no price is needed.
5. **Hedging.** With ``hedge: N`` the first N candidates share hedge
   group 1: they are launched together and the first to run wins.

Every target ends up exactly once, either as a candidate or as a rejection.
No clock, no I/O, no globals: the same inputs give an equal plan.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from controlplane.domain import (
    Candidate,
    DataSensitivity,
    PlacementPlan,
    Rejection,
    SignalSample,
    SignalSnapshot,
    Target,
    Task,
)
from controlplane.policy.model import CLOUD_PROVIDERS, Actions, Conditions, Match, Policy, Rule, Thresholds

__all__ = [
    "BUDGET_SOURCE",
    "CAPACITY_SOURCE",
    "DEFAULT_RULE",
    "GPU_UTILIZATION_SOURCE",
    "QUEUE_SOURCE",
    "SPOT_PRICE_SOURCE",
    "plan",
    "spot_price_key",
]

#: ``free_gpus/<target>``: a target's free GPUs (the local provider's free slots)
CAPACITY_SOURCE = "free_gpus"
#: ``gpu_utilization/<target>``: 0..1
GPU_UTILIZATION_SOURCE = "gpu_utilization"
#: ``spot_price/<provider>/<region>/<instance type>``: USD per hour
SPOT_PRICE_SOURCE = "spot_price"
#: ``queue/depth``: tasks waiting to be placed
QUEUE_SOURCE = "queue"
#: ``budget/spent_today_usd``: cloud spend so far today (UTC)
BUDGET_SOURCE = "budget"
#: the name the trace gives the implicit fallback rule
DEFAULT_RULE = "default"
_NO_ACTIONS = Actions()
#: per-rule cache of "no match" trace lines (tenants are open-ended, so bounded)
_LINE_CACHE_LIMIT = 4096


def spot_price_key(provider: str, region: str | None, instance_type: str | None) -> str:
    """The snapshot key of one spot price (``-`` for an unknown region or type)."""
    return f"{provider}/{region or '-'}/{instance_type or '-'}"


class _Signals:
    """Reads the snapshot with the policy's TTLs and records every value it consulted."""

    def __init__(self, snapshot: SignalSnapshot, thresholds: Thresholds, now: datetime) -> None:
        self.snapshot, self.thresholds, self.now = snapshot, thresholds, now
        self.used: dict[str, Any] = {}
        self.notes: list[str] = []

    def fresh(self, source: str, key: str, ttl: float) -> float | None:
        """The value if present and younger than both its own TTL and ``ttl``; otherwise None (noted)."""
        name = f"{source}/{key}"
        sample: SignalSample | None = self.snapshot.samples.get(name)
        if sample is None:
            if name not in self.used:
                self.used[name] = {"value": None, "age_seconds": None, "stale": True, "missing": True}
                self.notes.append(f"signal {name}: missing, not used")
            return None
        age = round(sample.age_seconds(self.now), 3)
        limit = min(sample.ttl_seconds, ttl)
        stale = age > limit
        if name not in self.used:
            self.used[name] = {
                "value": sample.value,
                "age_seconds": age,
                "ttl_seconds": limit,
                "stale": stale,
                "missing": False,
            }
            if stale:
                self.notes.append(f"signal {name}: stale ({age}s old, ttl {limit:g}s), not used")
        return None if stale else sample.value

    def load(self, source: str, key: str) -> float | None:
        return self.fresh(source, key, self.thresholds.load_ttl_seconds)

    def price(self, key: str) -> float | None:
        return self.fresh(SPOT_PRICE_SOURCE, key, self.thresholds.price_ttl_seconds)


# -- matching ---------------------------------------------------------------------------------------


def _mismatch(match: Match, task: Task) -> str | None:
    """Why labels, deadline or input size rule ``match`` out (``None`` when they hold).

    The enum and tenant fields come first, in :func:`_no_match_line`.
    """
    spec = task.spec
    for label, accepted in match.labels.items():
        value = spec.labels.get(label)
        if value is None:
            return f"label {label} absent"
        if accepted != ("*",) and value not in accepted:
            return f"label {label}={value!r} not in [{', '.join(accepted)}]"
    if match.deadline_seconds is not None and not match.deadline_seconds.holds(spec.deadline_seconds):
        return f"deadline_seconds {spec.deadline_seconds} not {match.deadline_seconds.describe()}"
    if match.input_bytes is not None and not match.input_bytes.holds(spec.input_bytes):
        return f"input_bytes {spec.input_bytes} not {match.input_bytes.describe()}"
    return None


def _no_match_line(rule: Rule, task: Task) -> str | None:
    """The trace line for a rule whose match fails, or None when it holds.

    plan() tries every rule before the first match, so this is its hot loop:
    the enum fields are checked by membership and their lines come from a
    per-rule cache keyed by the task's value (a handful of values each); the
    rest is formatted as needed.
    """
    match, spec = rule.match, task.spec
    if match.priority and spec.priority not in match.priority:
        return _cached_line(rule, "priority", spec.priority)
    if match.data_sensitivity and spec.data_sensitivity not in match.data_sensitivity:
        return _cached_line(rule, "data_sensitivity", spec.data_sensitivity)
    if match.kind and spec.kind not in match.kind:
        return _cached_line(rule, "kind", spec.kind)
    if match.tenant and spec.tenant not in match.tenant:
        return _cached_line(rule, "tenant", spec.tenant)
    why_not = _mismatch(match, task)
    return None if why_not is None else f"rule {rule.name}: no match ({why_not})"


def _cached_line(rule: Rule, field_name: str, value: str) -> str:
    lines = rule.no_match_lines
    line = lines.get((field_name, value))
    if line is None:
        shown = repr(value) if field_name == "tenant" else value
        line = f"rule {rule.name}: no match ({field_name} {shown} not in [{rule.match.listed[field_name]}])"
        if len(lines) < _LINE_CACHE_LIMIT:
            lines[(field_name, value)] = line
    return line


def _peak(target: str, signals: _Signals) -> str | None:
    """Why ``target`` is at peak load, or None (unknown load is not peak)."""
    t = signals.thresholds
    utilization = signals.load(GPU_UTILIZATION_SOURCE, target)
    if utilization is not None and utilization > t.peak_gpu_utilization:
        return f"{target} GPU utilisation {utilization:.2f} > {t.peak_gpu_utilization:g}"
    free = signals.load(CAPACITY_SOURCE, target)
    if free is not None and free < t.peak_free_gpus_below:
        return f"{target} free GPUs {free:g} < {t.peak_free_gpus_below:g}"
    depth = signals.load(QUEUE_SOURCE, "depth")
    if depth is not None and depth > t.peak_queue_depth:
        return f"queue depth {depth:g} > {t.peak_queue_depth:g}"
    return None


def _conditions(rule: Rule, policy: Policy, signals: _Signals) -> tuple[str | None, list[str]]:
    """(why the rule's ``when`` fails or None, what held)."""
    when: Conditions = rule.when
    held: list[str] = []
    for target in when.peak:
        why = _peak(target, signals)
        if why is None:
            return f"{target} not at peak load (or its load is unknown)", held
        held.append(f"peak: {why}")
    for target, limit in when.gpu_utilization_above.items():
        value = signals.load(GPU_UTILIZATION_SOURCE, target)
        if value is None or value <= limit:
            return f"{target} GPU utilisation {_shown(value)} not above {limit:g}", held
        held.append(f"{target} GPU utilisation {value:.2f} > {limit:g}")
    for target, limit in when.free_gpus_below.items():
        value = signals.load(CAPACITY_SOURCE, target)
        if value is None or value >= limit:
            return f"{target} free GPUs {_shown(value)} not below {limit:g}", held
        held.append(f"{target} free GPUs {value:g} < {limit:g}")
    if when.queue_depth_above is not None:
        value = signals.load(QUEUE_SOURCE, "depth")
        if value is None or value <= when.queue_depth_above:
            return f"queue depth {_shown(value)} not above {when.queue_depth_above:g}", held
        held.append(f"queue depth {value:g} > {when.queue_depth_above:g}")
    if when.spot_price_under_budget:
        found = _any_price_within_budget(rule, policy, signals)
        if found is None:
            return "no cloud target of the rule has a fresh spot price within its max price", held
        held.append(found)
    if when.budget_left_today_usd_above is not None:
        daily = policy.thresholds.daily_budget_usd
        spent = signals.fresh(BUDGET_SOURCE, "spent_today_usd", policy.thresholds.load_ttl_seconds)
        left = None if daily is None or spent is None else daily - spent
        if left is None or left <= when.budget_left_today_usd_above:
            return f"budget left today {_shown(left)} not above {when.budget_left_today_usd_above:g} USD", held
        held.append(f"budget left today {left:.2f} > {when.budget_left_today_usd_above:g} USD")
    return None, held


def _shown(value: float | None) -> str:
    return "unknown" if value is None else f"{value:g}"


def _any_price_within_budget(rule: Rule, policy: Policy, signals: _Signals) -> str | None:
    names = rule.actions.targets or tuple(t.name for t in policy.targets)
    for name in names:
        target = policy.target(name)
        if target is None or target.provider not in CLOUD_PROVIDERS:
            continue
        ceiling = _ceiling(target, rule.actions)
        if ceiling is None:
            continue
        for region, instance_type in _offers(target, rule.actions):
            key = spot_price_key(target.provider, region, instance_type)
            price = signals.price(key)
            if price is not None and price <= ceiling:
                return f"spot price {key} {price:.4f} <= {ceiling:g} USD/h"
    return None


# -- targets ----------------------------------------------------------------------------------------


def _ceiling(target: Target, actions: Actions) -> float | None:
    prices = [p for p in (target.max_price_usd_h, actions.max_price_usd_h) if p is not None]
    return min(prices) if prices else None


def _offers(target: Target, actions: Actions) -> list[tuple[str | None, str | None]]:
    regions: tuple[str | None, ...] = target.regions or (None,)
    types: tuple[str | None, ...] = (
        (actions.instance_type,) if actions.instance_type else (target.instance_types or (None,))
    )
    return [(region, instance_type) for region in regions for instance_type in types]


def _rule_exclusions(policy: Policy, actions: Actions, rule_name: str, order: list[str]) -> dict[str, str]:
    """Targets the rule rules out, with the reason, in document order."""
    out: dict[str, str] = {}
    for target in policy.targets:
        name = target.name
        if name not in order:
            out[name] = f"rule {rule_name} does not list it"
        elif name in actions.exclude:
            out[name] = f"rule {rule_name} excludes it"
        elif actions.require and name not in actions.require:
            out[name] = f"rule {rule_name} requires {', '.join(actions.require)}"
        elif actions.use_cloud is True and target.provider not in CLOUD_PROVIDERS:
            out[name] = f"rule {rule_name} says use_cloud: true and {name} is not a cloud target"
        elif actions.use_cloud is False and target.provider in CLOUD_PROVIDERS:
            out[name] = f"rule {rule_name} says use_cloud: false and {name} is a cloud target"
        elif (
            actions.cloud_provider and target.provider in CLOUD_PROVIDERS and target.provider != actions.cloud_provider
        ):
            out[name] = f"rule {rule_name} says cloud_provider: {actions.cloud_provider}"
    return out


def _price_check(
    target: Target, actions: Actions, signals: _Signals
) -> tuple[Rejection | None, str | None, str | None, float | None, list[str]]:
    """For a cloud target: (rejection, region, instance type, expected $/h, reasons)."""
    offers = _offers(target, actions)
    ceiling = _ceiling(target, actions)
    over: list[str] = []
    for region, instance_type in offers:
        key = spot_price_key(target.provider, region, instance_type)
        price = signals.price(key)
        if price is None:
            continue
        if ceiling is None or price <= ceiling:
            within = f" <= max {ceiling:g}" if ceiling is not None else ""
            return None, region, instance_type, price, [f"spot price {key} {price:.4f} USD/h{within}"]
        over.append(f"{key} {price:.4f} > max {ceiling:g}")
    region, instance_type = offers[0]
    if ceiling is None:
        reason = "no fresh spot price; no max price, so the provider caps it at on-demand"
        return None, region, instance_type, None, [reason]
    if over:
        detail = "spot price above the max price: " + "; ".join(over)
        return Rejection(target=target.name, code="price_above_max", detail=detail), None, None, None, []
    detail = f"max price {ceiling:g} USD/h but no fresh spot price (a stale price never chooses a cloud)"
    return Rejection(target=target.name, code="stale_price", detail=detail), None, None, None, []


# -- the function -----------------------------------------------------------------------------------


def plan(task: Task, snapshot: SignalSnapshot, policy: Policy, now: datetime) -> PlacementPlan:
    """Decide where ``task`` may run, best first, and say why for every target.

    Pure and deterministic: it reads only its arguments (``now`` is the
    decision time, used for signal ages) and returns plain data.
    """
    signals = _Signals(snapshot, policy.thresholds, now)
    trace: list[str] = []
    chosen: Rule | None = None
    for rule in policy.rules:
        why_not = _no_match_line(rule, task)
        if why_not is not None:
            trace.append(why_not)
            continue
        if not rule.when.empty:
            failed, held = _conditions(rule, policy, signals)
            if failed is not None:
                trace.append(f"rule {rule.name}: task matches, conditions do not ({failed})")
                continue
            trace.append(f"rule {rule.name}: matched; conditions hold ({'; '.join(held)})")
        else:
            trace.append(f"rule {rule.name}: matched")
        chosen = rule
        break
    if chosen is not None and len(trace) < len(policy.rules):
        trace.append(f"{len(policy.rules) - len(trace)} later rule(s) not evaluated (first match wins)")

    all_names = [target.name for target in policy.targets]
    if chosen is None:
        rule_name, actions = DEFAULT_RULE, _NO_ACTIONS
        trace.append(f"rule {DEFAULT_RULE}: no rule matched; every target in document order")
        order = all_names
    else:
        rule_name, actions = chosen.name, chosen.actions
        order = list(actions.targets) if actions.targets else all_names
    excluded = _rule_exclusions(policy, actions, rule_name, order)

    private_task = task.spec.data_sensitivity is DataSensitivity.PRIVATE
    rejected: dict[str, Rejection] = {}
    # 1. the built-in private-data rule comes before anything a policy says
    if private_task:
        for target in policy.targets:
            if not target.private:
                rejected[target.name] = Rejection(
                    target=target.name,
                    code="private_data",
                    detail="the task's data is private and this target is not (built-in rule, not a policy choice)",
                )
    # 2. what the rule rules out
    for name, detail in excluded.items():
        if name not in rejected:
            rejected[name] = Rejection(target=name, code="excluded_by_rule", detail=detail)
    # 3. capacity and price, for the targets still in the running, in preference order
    candidates: list[Candidate] = []
    ranked = chosen is not None and bool(actions.targets)
    for rank, name in enumerate(order, start=1):
        if name in rejected:
            continue
        target = policy.targets[all_names.index(name)]
        free = signals.load(CAPACITY_SOURCE, name)
        if free is not None and free <= 0:
            rejected[name] = Rejection(
                target=name, code="no_capacity", detail=f"no free GPU: {CAPACITY_SOURCE}/{name} = {free:g}"
            )
            continue
        reasons = [
            f"rule {rule_name} ranks it {rank} of {len(order)}"
            if ranked
            else f"rule {rule_name}: document order, position {all_names.index(name) + 1}"
        ]
        if private_task:
            reasons.append("private target for private data")
        if free is not None:
            reasons.append(f"{free:g} free GPU(s)")
        region = target.regions[0] if target.regions else None
        instance_type = actions.instance_type or (target.instance_types[0] if target.instance_types else None)
        expected: float | None = None
        if target.provider in CLOUD_PROVIDERS:
            rejection, region, instance_type, expected, price_reasons = _price_check(target, actions, signals)
            if rejection is not None:
                rejected[name] = rejection
                continue
            reasons.extend(price_reasons)
        candidates.append(
            Candidate(
                target=name,
                provider=target.provider,
                private=target.private,
                region=region,
                instance_type=instance_type,
                max_price_usd_h=_ceiling(target, actions),
                expected_usd_h=expected,
                reasons=tuple(reasons),
            )
        )
    if actions.hedge > 1 and len(candidates) > 1:
        hedged = min(actions.hedge, len(candidates))
        hedge_reason = f"hedged: launched with {hedged - 1} other(s), the first to run wins"
        candidates = [
            replace(c, hedge_group=1, reasons=(*c.reasons, hedge_reason)) if i < hedged else c
            for i, c in enumerate(candidates)
        ]
        trace.append(f"hedge: the first {hedged} candidates are launched together")
    trace.extend(signals.notes)
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
        signals_used=signals.used,
    )
