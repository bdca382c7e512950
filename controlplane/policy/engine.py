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
   A target the rule would offer but that has nothing to launch with (the
   seed form's built-in cloud with no launch settings configured) is
   rejected ``not_configured``.
4. **Per target, in that order:** a cloud target is rejected when a daily
   budget is spent (``budget_exhausted``: the overall ``daily_budget_usd``
   or the task's tenant's ``tenant_daily_budget_usd``), or when a budget is
   set but today's spend is stale or missing (``budget_unknown``: unknown
   spend never lifts a cap). Then fresh ``free_gpus`` of 0 or less rejects
   it (``no_capacity``). A cloud target then needs a (region, instance type)
   whose fresh spot price is within its max price (the lower of the
   target's and the rule's) and whose circuit breaker is not open (a fresh
   ``breaker/...`` sample of 1; a stale or missing one is closed); the
   first such pair in the target's order is chosen and its price is the
   expected $/h. A half-open breaker (0.5) lets the pair through, noted as
   its probe. Open breakers on every pair that would do reject it
   (``breaker_open``); a price above the max rejects it
   (``price_above_max``); with a max price but no fresh price it is
   rejected ``stale_price``: a price older than its TTL is never the reason
   to choose a cloud. Without a max price the provider's own cap applies
   (spot never costs more than on-demand), so no price is needed.
5. **Hedging.** With ``hedge: N`` the first N candidates share hedge
   group 1: they are launched together and the first to run wins.

Every target ends up exactly once, either as a candidate or as a rejection.
No clock, no I/O, no globals: the same inputs give an equal plan.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controlplane.domain import (
    BUDGET_SOURCE,
    CAPACITY_SOURCE,
    GPU_UTILIZATION_SOURCE,
    QUEUE_SOURCE,
    SPOT_PRICE_SOURCE,
    Candidate,
    DataSensitivity,
    PlacementPlan,
    Rejection,
    SignalSnapshot,
    Target,
    Task,
    spot_price_key,
)
from controlplane.domain.reliability import BREAKER_OPEN, BREAKER_SOURCE, SPENT_TODAY_KEY, tenant_spend_key
from controlplane.policy.freshness import price_ttl
from controlplane.policy.model import CLOUD_PROVIDERS, Actions, Conditions, Match, Policy, Rule, Thresholds

__all__ = [
    "BREAKER_SOURCE",
    "BUDGET_SOURCE",
    "CAPACITY_SOURCE",
    "DEFAULT_RULE",
    "GPU_UTILIZATION_SOURCE",
    "QUEUE_SOURCE",
    "SPOT_PRICE_SOURCE",
    "plan",
    "spot_price_key",
]

#: the name the trace gives the implicit fallback rule
DEFAULT_RULE = "default"
_NO_ACTIONS = Actions()
#: bound of every cache whose keys come from tasks (tenants are open-ended)
_LINE_CACHE_LIMIT = 4096
#: where a policy keeps what plan() derives from it (Rule and Match cache theirs the same way)
_COMPILED_ATTR = "_plan_compiled"
_PRIVATE_DETAIL = "the task's data is private and this target is not (built-in rule, not a policy choice)"
_PRIVATE_REASON = "private target for private data"
_NO_PRICE_NO_CAP = "no fresh spot price; no max price, so the provider caps it at on-demand"
_NO_CANDIDATE = "no candidate: every target was rejected"
_DEFAULT_LINE = f"rule {DEFAULT_RULE}: no rule matched; every target in document order"


class _Signals:
    """Reads the snapshot with the policy's TTLs and records every value it consulted."""

    __slots__ = ("notes", "now", "samples", "thresholds", "used")

    def __init__(self, snapshot: SignalSnapshot, thresholds: Thresholds, now: datetime) -> None:
        self.samples, self.thresholds, self.now = snapshot.samples, thresholds, now
        self.used: dict[str, Any] = {}
        self.notes: list[str] = []

    def fresh(self, source: str, key: str, ttl: float) -> float | None:
        """The value if present and younger than both its own TTL and ``ttl``; otherwise None (noted)."""
        return self.read(f"{source}/{key}", ttl)

    def read(self, name: str, ttl: float) -> float | None:
        """:meth:`fresh` by full sample name."""
        seen = self.used.get(name)
        if seen is not None:
            # a name belongs to one source, so ``ttl`` is the one it was first read with
            return None if seen["stale"] else seen["value"]
        sample = self.samples.get(name)
        if sample is None:
            self.used[name] = {"value": None, "age_seconds": None, "stale": True, "missing": True}
            self.notes.append(f"signal {name}: missing, not used")
            return None
        age = round(sample.age_seconds(self.now), 3)
        own = sample.ttl_seconds
        limit = ttl if ttl < own else own  # min(own, ttl), ties keep ``own`` as min() does
        stale = age > limit
        self.used[name] = {
            "value": sample.value,
            "age_seconds": age,
            "ttl_seconds": limit,
            "stale": stale,
            "missing": False,
        }
        if stale:
            self.notes.append(f"signal {name}: stale ({age}s old, ttl {limit:g}s), not used")
            return None
        return sample.value

    def load(self, source: str, key: str) -> float | None:
        return self.read(f"{source}/{key}", self.thresholds.load_ttl_seconds)

    def price(self, key: str) -> float | None:
        # the key starts with the provider, whose prices have their own TTL (policy/freshness.py)
        return self.read(f"{SPOT_PRICE_SOURCE}/{key}", price_ttl(self.thresholds, key.partition("/")[0]))

    def breaker(self, name: str) -> float | None:
        """A fresh breaker sample, by full name; None when stale or missing (both mean closed).

        A missing breaker is not recorded: absence of evidence never blocks, and
        receipts of snapshots without breakers stay as they were.
        """
        if name not in self.used and name not in self.samples:
            return None
        return self.read(name, self.thresholds.load_ttl_seconds)

    def tenant_spend(self, tenant: str) -> float:
        """The tenant's spend today; called only once the total is known to be fresh.

        The budget poller writes every tenant with spend today at each poll (and a
        0 for one that drops out), so a tenant without a fresh sample beside a
        fresh total has spent nothing today.
        """
        name = f"{BUDGET_SOURCE}/{tenant_spend_key(tenant)}"
        if name in self.samples:
            value = self.read(name, self.thresholds.load_ttl_seconds)
            if value is not None:
                return value
        else:
            self.used[name] = {"value": None, "age_seconds": None, "stale": True, "missing": True}
        self.notes.append(f"signal {name}: none fresh beside a fresh total, so no spend today: 0")
        return 0.0


# -- matching ---------------------------------------------------------------------------------------


def _mismatch(match: Match, task: Task) -> str | None:
    """Why labels, deadline or input size rule ``match`` out (``None`` when they hold).

    The enum and tenant fields come first, in :func:`_enum_line`.
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


def _enum_line(rule: Rule, priority: str, sensitivity: str, kind: str, tenant: str) -> str | None:
    """The trace line for a rule whose priority, data sensitivity, kind or tenant rules the task out."""
    match = rule.match
    if match.priority and priority not in match.priority:
        return _cached_line(rule, "priority", priority)
    if match.data_sensitivity and sensitivity not in match.data_sensitivity:
        return _cached_line(rule, "data_sensitivity", sensitivity)
    if match.kind and kind not in match.kind:
        return _cached_line(rule, "kind", kind)
    if match.tenant and tenant not in match.tenant:
        return _cached_line(rule, "tenant", tenant)
    return None


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


def _probe_reason(key: str) -> str:
    return f"circuit breaker {key} half-open: this launch is its probe"


def _breaker_rejection(target: str, tripped: list[str], over: list[str]) -> Rejection:
    detail = "circuit breaker open (recent preemptions or capacity errors) on " + ", ".join(tripped)
    if over:
        detail += "; spot price above the max price: " + "; ".join(over)
    return Rejection(target=target, code="breaker_open", detail=detail)


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
                tripped = signals.breaker(f"{BREAKER_SOURCE}/{key}")
                if tripped is not None and tripped >= BREAKER_OPEN:
                    continue  # an offer plan() would skip is no reason to go to the cloud
                return f"spot price {key} {price:.4f} <= {ceiling:g} USD/h"
    return None


def _budget_block(signals: _Signals, tenant: str) -> tuple[str, str] | None:
    """(code, detail) when a daily budget keeps the task off every cloud; None otherwise.

    Called only when the policy sets a budget. Unknown spend with a budget set
    blocks the clouds too (``budget_unknown``): a poller outage must not turn a
    cap into unlimited spend, and private targets still take the work.
    """
    t = signals.thresholds
    daily, own = t.daily_budget_usd, t.tenant_budget(tenant)
    if daily is None and own is None:
        return None
    spent = signals.fresh(BUDGET_SOURCE, SPENT_TODAY_KEY, t.load_ttl_seconds)
    if spent is None:
        which = "daily_budget_usd" if daily is not None else f"tenant_daily_budget_usd for {tenant!r}"
        return (
            "budget_unknown",
            f"{which} is set but today's cloud spend is unknown ({BUDGET_SOURCE}/{SPENT_TODAY_KEY} stale or "
            "missing): no cloud until it is known",
        )
    if daily is not None and spent >= daily:
        return "budget_exhausted", f"daily_budget_usd: spent {spent:.2f} of {daily:g} USD today (UTC), every tenant"
    if own is not None:
        mine = signals.tenant_spend(tenant)
        if mine >= own:
            return (
                "budget_exhausted",
                f"tenant_daily_budget_usd for {tenant!r}: spent {mine:.2f} of {own:g} USD today (UTC)",
            )
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


# -- what plan() derives once per policy ------------------------------------------------------------


class _Lane:
    """One target still in the running after a rule's static rejections: everything but the signals."""

    __slots__ = (
        "capacity_signal",
        "ceiling",
        "cloud",
        "instance_type",
        "name",
        "offers",
        "over_suffix",
        "price_ttl",
        "private",
        "provider",
        "rank_reason",
        "region",
        "stale_price",
        "within_suffix",
    )

    def __init__(self, target: Target, actions: Actions, rank_reason: str, thresholds: Thresholds) -> None:
        self.name, self.provider, self.private = target.name, target.provider, target.private
        self.price_ttl = price_ttl(thresholds, target.provider)
        self.capacity_signal = f"{CAPACITY_SOURCE}/{target.name}"
        self.rank_reason = rank_reason
        self.ceiling = ceiling = _ceiling(target, actions)
        self.cloud = target.provider in CLOUD_PROVIDERS
        self.region: str | None = target.regions[0] if target.regions else None
        self.instance_type: str | None = actions.instance_type or (
            target.instance_types[0] if target.instance_types else None
        )
        #: (region, instance type, snapshot key, price sample name, breaker sample name), in the order the
        #: price check tries them
        self.offers = tuple(
            (region, instance_type, key, f"{SPOT_PRICE_SOURCE}/{key}", f"{BREAKER_SOURCE}/{key}")
            for region, instance_type in _offers(target, actions)
            for key in (spot_price_key(target.provider, region, instance_type),)
        )
        self.within_suffix = " USD/h" if ceiling is None else f" USD/h <= max {ceiling:g}"
        self.over_suffix = "" if ceiling is None else f" > max {ceiling:g}"
        self.stale_price = (
            None
            if ceiling is None
            else Rejection(
                target=target.name,
                code="stale_price",
                detail=f"max price {ceiling:g} USD/h but no fresh spot price (a stale price never chooses a cloud)",
            )
        )


class _Outcome:
    """What a chosen rule (or the default) does to the targets, before any signal is read."""

    __slots__ = ("actions", "hedge_lines", "lanes", "rejected", "rejections", "rule_name")

    def __init__(self, policy: Policy, rule: Rule | None, position: dict[str, int]) -> None:
        all_names = [target.name for target in policy.targets]
        if rule is None:
            rule_name, actions, order, ranked = DEFAULT_RULE, _NO_ACTIONS, all_names, False
        else:
            rule_name, actions = rule.name, rule.actions
            order = list(actions.targets) if actions.targets else all_names
            ranked = bool(actions.targets)
        self.rule_name, self.actions = rule_name, actions
        excluded = _rule_exclusions(policy, actions, rule_name, order)
        private_rejections = {
            target.name: Rejection(target=target.name, code="private_data", detail=_PRIVATE_DETAIL)
            for target in policy.targets
            if not target.private
        }
        # indexed by whether the task's data is private (False, True), like ``lanes`` and ``rejections``
        self.rejected: tuple[dict[str, Rejection], dict[str, Rejection]] = ({}, dict(private_rejections))
        for rejected in self.rejected:
            for name, detail in excluded.items():
                if name not in rejected:
                    rejected[name] = Rejection(target=name, code="excluded_by_rule", detail=detail)
        lanes: tuple[list[_Lane], list[_Lane]] = ([], [])
        for rank, name in enumerate(order, start=1):
            if name in excluded:
                continue
            index = position.get(name)
            if index is None:
                all_names.index(name)  # a rule naming an unknown target: the same ValueError as ever
                continue
            unusable = policy.targets[index].not_configured
            if unusable is not None:
                # a seed built-in cloud with nothing to launch with: out of the plan, so the task falls back
                for rejected in self.rejected:
                    rejected.setdefault(name, Rejection(target=name, code="not_configured", detail=unusable))
                continue
            reason = (
                f"rule {rule_name} ranks it {rank} of {len(order)}"
                if ranked
                else f"rule {rule_name}: document order, position {index + 1}"
            )
            lane = _Lane(policy.targets[index], actions, reason, policy.thresholds)
            for private, rejected in enumerate(self.rejected):
                if name not in rejected:
                    lanes[private].append(lane)
        self.lanes = (tuple(lanes[0]), tuple(lanes[1]))
        #: the plan's rejections when no signal rejects anything, in document order
        self.rejections = tuple(
            tuple(rejected[name] for name in all_names if name in rejected) for rejected in self.rejected
        )
        #: hedged candidate count -> (the reason each hedged candidate gets, the trace line)
        self.hedge_lines = {
            hedged: (
                f"hedged: launched with {hedged - 1} other(s), the first to run wins",
                f"hedge: the first {hedged} candidates are launched together",
            )
            for hedged in range(2, actions.hedge + 1)
        }


#: (priority, data sensitivity, kind, tenant) of a task
_ScanKey = tuple[str, str, str, str]
#: ((no-match lines before it, index) for each rule still to check, no-match lines after the last)
_Scan = tuple[tuple[tuple[tuple[str, ...], int], ...], tuple[str, ...]]


class _Compiled:
    """Everything plan() needs that depends on the policy alone, built on first use.

    Rule outcomes are built when a rule is first chosen; rule scans are kept per
    (priority, data sensitivity, kind, tenant), bounded like the trace lines.
    """

    __slots__ = (
        "all_names",
        "conditional",
        "default",
        "later",
        "matched",
        "outcomes",
        "policy",
        "position",
        "refined",
        "scans",
    )

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.all_names = tuple(target.name for target in policy.targets)
        self.position: dict[str, int] = {}
        for index, target in enumerate(policy.targets):
            self.position.setdefault(target.name, index)
        count = len(policy.rules)
        #: per rule: whether labels, deadline or input size must still be checked once the enums pass
        self.refined = tuple(
            bool(r.match.labels) or r.match.deadline_seconds is not None or r.match.input_bytes is not None
            for r in policy.rules
        )
        self.conditional = tuple(not r.when.empty for r in policy.rules)
        self.matched = tuple(f"rule {r.name}: matched" for r in policy.rules)
        self.later = tuple(
            f"{count - i - 1} later rule(s) not evaluated (first match wins)" if i + 1 < count else None
            for i in range(count)
        )
        self.default = _Outcome(policy, None, self.position)
        self.outcomes: dict[int, _Outcome] = {}
        self.scans: dict[_ScanKey, _Scan] = {}

    def outcome(self, index: int) -> _Outcome:
        outcome = self.outcomes.get(index)
        if outcome is None:
            outcome = self.outcomes[index] = _Outcome(self.policy, self.policy.rules[index], self.position)
        return outcome

    def scan(self, key: _ScanKey) -> _Scan:
        """The rules whose enum fields hold for ``key``, each with the no-match lines of the rules before it.

        The second item is the no-match lines after the last such rule.
        """
        scan = self.scans.get(key)
        if scan is not None:
            return scan
        priority, sensitivity, kind, tenant = key
        steps: list[tuple[tuple[str, ...], int]] = []
        lines: list[str] = []
        for index, rule in enumerate(self.policy.rules):
            line = _enum_line(rule, priority, sensitivity, kind, tenant)
            if line is None:
                steps.append((tuple(lines), index))
                lines = []
            else:
                lines.append(line)
        scan = (tuple(steps), tuple(lines))
        if len(self.scans) >= _LINE_CACHE_LIMIT:
            self.scans.clear()  # a flood of tenants: keep the ones seen since
        self.scans[key] = scan
        return scan


def _compiled(policy: Policy) -> _Compiled:
    compiled: _Compiled | None = policy.__dict__.get(_COMPILED_ATTR)
    if compiled is None:
        # kept on the policy itself: a hot reload's new policy starts empty and the old one takes its cache along
        compiled = _Compiled(policy)
        object.__setattr__(policy, _COMPILED_ATTR, compiled)
    return compiled


# -- the function -----------------------------------------------------------------------------------


def plan(task: Task, snapshot: SignalSnapshot, policy: Policy, now: datetime) -> PlacementPlan:
    """Decide where ``task`` may run, best first, and say why for every target.

    Pure and deterministic: it reads only its arguments (``now`` is the
    decision time, used for signal ages) and returns plain data. What it
    keeps between calls depends on the policy alone, or is a trace line
    that is the same text every time.
    """
    compiled = _compiled(policy)
    spec = task.spec
    signals = _Signals(snapshot, policy.thresholds, now)
    steps, tail = compiled.scan((spec.priority, spec.data_sensitivity, spec.kind, spec.tenant))
    trace: list[str] = []
    chosen = -1
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
        chosen = index
        break
    if chosen < 0:
        trace += tail
        trace.append(_DEFAULT_LINE)
        outcome = compiled.default
    else:
        later = compiled.later[chosen]
        if later is not None:
            trace.append(later)
        outcome = compiled.outcome(chosen)

    private_task = spec.data_sensitivity is DataSensitivity.PRIVATE
    # the private-data rule and the rule's own exclusions depend on the policy alone, so the outcome holds them;
    # what is left here is what the signals say: capacity, then price, in preference order
    rejected: dict[str, Rejection] = {}
    picks: list[tuple[_Lane, str | None, str | None, float | None, list[str], str | None]] = []
    load_ttl = policy.thresholds.load_ttl_seconds
    read, breaker = signals.read, signals.breaker
    # the daily budgets are read once, and only when a cloud target is still in the running
    budget_pending = policy.thresholds.has_budget
    blocked: tuple[str, str] | None = None
    for lane in outcome.lanes[private_task]:
        name = lane.name
        if rejected and name in rejected:
            continue
        if lane.cloud:
            if budget_pending:
                blocked, budget_pending = _budget_block(signals, spec.tenant), False
            if blocked is not None:
                rejected[name] = Rejection(target=name, code=blocked[0], detail=blocked[1])
                continue
        free = read(lane.capacity_signal, load_ttl)
        if free is not None and free <= 0:
            rejected[name] = Rejection(
                target=name, code="no_capacity", detail=f"no free GPU: {lane.capacity_signal} = {free:g}"
            )
            continue
        reasons = [lane.rank_reason]
        if private_task:
            reasons.append(_PRIVATE_REASON)
        if free is not None:
            reasons.append(f"{free:g} free GPU(s)")
        if not lane.cloud:
            picks.append((lane, lane.region, lane.instance_type, None, reasons, None))
            continue
        ceiling = lane.ceiling
        over: list[str] = []
        tripped: list[str] = []
        for region, instance_type, key, sample_name, breaker_name in lane.offers:
            price = read(sample_name, lane.price_ttl)
            if price is None:
                continue
            if ceiling is None or price <= ceiling:
                state = breaker(breaker_name)
                if state is not None and state >= BREAKER_OPEN:
                    tripped.append(key)  # skipped like a price above the max
                    continue
                reasons.append(f"spot price {key} {price:.4f}{lane.within_suffix}")
                probe = None
                if state is not None and state > 0:
                    reasons.append(_probe_reason(key))
                    probe = key
                picks.append((lane, region, instance_type, price, reasons, probe))
                break
            over.append(f"{key} {price:.4f}{lane.over_suffix}")
        else:
            if lane.stale_price is None:  # no max price: the first offer whose breaker lets it through
                for region, instance_type, key, _sample, breaker_name in lane.offers:
                    state = breaker(breaker_name)
                    if state is not None and state >= BREAKER_OPEN:
                        if key not in tripped:
                            tripped.append(key)
                        continue
                    reasons.append(_NO_PRICE_NO_CAP)
                    probe = None
                    if state is not None and state > 0:
                        reasons.append(_probe_reason(key))
                        probe = key
                    picks.append((lane, region, instance_type, None, reasons, probe))
                    break
                else:
                    rejected[name] = _breaker_rejection(name, tripped, over)
            elif tripped:
                rejected[name] = _breaker_rejection(name, tripped, over)
            elif over:
                detail = "spot price above the max price: " + "; ".join(over)
                rejected[name] = Rejection(target=name, code="price_above_max", detail=detail)
            else:
                rejected[name] = lane.stale_price

    hedged = min(outcome.actions.hedge, len(picks)) if outcome.actions.hedge > 1 and len(picks) > 1 else 0
    if hedged:  # the candidates are built once, hedge group included
        hedge_reason, hedge_line = outcome.hedge_lines[hedged]
        for pick in picks[:hedged]:
            pick[4].append(hedge_reason)
        trace.append(hedge_line)
    candidates = tuple(
        Candidate(
            target=lane.name,
            provider=lane.provider,
            private=lane.private,
            region=region,
            instance_type=instance_type,
            max_price_usd_h=lane.ceiling,
            expected_usd_h=expected,
            hedge_group=1 if place < hedged else None,
            breaker_probe=probe,
            reasons=tuple(reasons),
        )
        for place, (lane, region, instance_type, expected, reasons, probe) in enumerate(picks)
    )
    trace += signals.notes
    if not candidates:
        trace.append(_NO_CANDIDATE)
    if rejected:
        rejected = {**outcome.rejected[private_task], **rejected}
        # in document order, so the receipt reads the same way as the policy
        rejections = tuple(rejected[name] for name in compiled.all_names if name in rejected)
    else:
        rejections = outcome.rejections[private_task]
    return PlacementPlan(
        task_id=task.id,
        policy_version=policy.version,
        decided_at=now,
        candidates=candidates,
        rejections=rejections,
        trace=tuple(trace),
        signals_used=signals.used,
    )
