"""Which rule a task gets: ``match`` on the task, then ``when`` on the signals; first match wins.

:func:`choose_rule` walks the rules the task's enum fields leave (see
:meth:`CompiledPolicy.scan`), checks labels, deadline and input size, then the
rule's conditions, and writes a trace line for every rule it passes over.
A stale or missing signal makes its condition false.
"""

from __future__ import annotations

from datetime import datetime

from controlplane.domain import (
    BUDGET_SOURCE,
    CAPACITY_SOURCE,
    GPU_UTILIZATION_SOURCE,
    QUEUE_SOURCE,
    SignalSnapshot,
    Task,
    spot_price_key,
)
from controlplane.domain.reliability import BREAKER_OPEN, BREAKER_SOURCE
from controlplane.policy.compiled import (
    DEFAULT_RULE,
    CompiledPolicy,
    Outcome,
    compiled_policy,
    max_price_of,
    offers_of,
)
from controlplane.policy.model import Conditions, Match, Policy, Rule
from controlplane.policy.reading import SignalReader

__all__ = ["choose_rule", "conditions_held"]

_DEFAULT_LINE = f"rule {DEFAULT_RULE}: no rule matched; every target in document order"


def choose_rule(compiled: CompiledPolicy, task: Task, signals: SignalReader) -> tuple[Outcome, list[str]]:
    """The first rule whose ``match`` and ``when`` hold (or the default), and the trace that says why."""
    policy, spec = compiled.policy, task.spec
    steps, tail = compiled.scan((spec.priority, spec.data_sensitivity, spec.kind, spec.tenant))
    trace: list[str] = []
    for lines, index in steps:
        trace += lines
        rule = policy.rules[index]
        if compiled.refined[index]:
            why_not = _mismatch(rule.match, task)
            if why_not is not None:
                trace.append(f"rule {rule.name}: no match ({why_not})")
                continue
        if compiled.conditional[index]:
            failed, held = _conditions(rule, policy, signals)
            if failed is not None:
                trace.append(f"rule {rule.name}: task matches, conditions do not ({failed})")
                continue
            trace.append(f"rule {rule.name}: matched; conditions hold ({'; '.join(held)})")
        else:
            trace.append(compiled.matched[index])
        later = compiled.later[index]
        if later is not None:
            trace.append(later)
        return compiled.outcome(index), trace
    trace += tail
    trace.append(_DEFAULT_LINE)
    return compiled.default, trace


def conditions_held(policy: Policy, snapshot: SignalSnapshot, now: datetime) -> tuple[bool, ...]:
    """Whether each rule's ``when`` holds on ``snapshot`` at ``now`` (True for a rule without one).

    The scheduler watches this between rounds: a rule whose conditions flip
    can place tasks that waited under another rule (``burst-at-peak``
    starts to hold), so waiting tasks are planned again at once.
    """
    compiled = compiled_policy(policy)
    signals = SignalReader(snapshot, policy.thresholds, now)
    return tuple(
        not conditional or _conditions(rule, policy, signals)[0] is None
        for rule, conditional in zip(policy.rules, compiled.conditional, strict=True)
    )


def _mismatch(match: Match, task: Task) -> str | None:
    """Why labels, deadline or input size rule ``match`` out (``None`` when they hold).

    The enum and tenant fields come first, in :meth:`CompiledPolicy.scan`.
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


def _peak(target: str, signals: SignalReader) -> str | None:
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


def _conditions(rule: Rule, policy: Policy, signals: SignalReader) -> tuple[str | None, list[str]]:
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


def _any_price_within_budget(rule: Rule, policy: Policy, signals: SignalReader) -> str | None:
    names = rule.actions.targets or tuple(t.name for t in policy.targets)
    for name in names:
        target = policy.target(name)
        cloud = None if target is None else target.market_provider
        if target is None or cloud is None:
            continue
        ceiling = max_price_of(target, rule.actions)
        if ceiling is None:
            continue
        for region, instance_type in offers_of(target, rule.actions):
            key = spot_price_key(cloud, region, instance_type)
            price = signals.price(key)
            if price is not None and price <= ceiling:
                tripped = signals.breaker(f"{BREAKER_SOURCE}/{key}")
                if tripped is not None and tripped >= BREAKER_OPEN:
                    continue  # an offer plan() would skip is no reason to go to the cloud
                return f"spot price {key} {price:.4f} <= {ceiling:g} USD/h"
    return None
