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
4. **Per target, in that order:** a target whose workers could never read
   the task's inputs (after staging: a local file needs a target with a
   storage; an ``s3://`` input on an Azure target needs a storage to copy it
   into) is rejected ``unreachable_input``; one that could not write its
   output where the tenant gets it back, ``unreachable_output``
   (:func:`~controlplane.domain.target_storage.unreachable`). Then a cloud target is rejected when a daily
   budget is spent (``budget_exhausted``: the overall ``daily_budget_usd``
   or the task's tenant's ``tenant_daily_budget_usd``), or when a budget is
   set but today's spend is stale or missing (``budget_unknown``: unknown
   spend never lifts a cap). Then fresh ``free_gpus`` of 0 or less rejects
   it (``no_capacity``), unless it is not a cloud target and a fresh
   ``preemptible_gpus/<target>/<task priority>`` of 1 or more says the
   task's PriorityClass would preempt a lower-priority pod there (the pod
   goes, and the reason says so). A cloud target then needs a (region, instance type)
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
5. **Ranking.** With ``rank: expected_cost`` the candidates are ordered by
   expected dollars per completed task and each cloud target takes its
   cheapest expected offer (:mod:`~controlplane.policy.spot_risk`).
6. **The deadline rule.** With ``deadline_aware: true`` on-demand
   candidates are held back while the task's slack covers the restart
   overhead, and go before spot once it does not
   (:mod:`~controlplane.policy.deadline_rule`).
7. **Hedging.** With ``hedge: N`` the first N candidates share hedge
   group 1: they are launched together and the first to run wins.

Every target ends up exactly once, either as a candidate or as a rejection.
No clock, no I/O, no globals: the same inputs give an equal plan.

Where each step lives: :mod:`~controlplane.policy.rules` chooses the rule
(step 2), :mod:`~controlplane.policy.compiled` holds what a rule does to the
targets before any signal is read (steps 1 and 3, built once per policy),
:mod:`~controlplane.policy.reading` reads the snapshot; this module applies
the signals to each target (step 4) and hedges (step 5).
"""

from __future__ import annotations

import math
from datetime import datetime

from controlplane.domain import (
    BUDGET_SOURCE,
    CAPACITY_SOURCE,
    GPU_UTILIZATION_SOURCE,
    ON_DEMAND,
    PROVIDERS,
    QUEUE_SOURCE,
    SPOT_PRICE_SOURCE,
    Candidate,
    DataSensitivity,
    PlacementPlan,
    Rejection,
    SignalSnapshot,
    Task,
    TaskSpec,
    spot_price_key,
)
from controlplane.domain.reliability import BREAKER_OPEN, BREAKER_SOURCE, SPENT_TODAY_KEY
from controlplane.domain.target_storage import unreachable, uri_scheme
from controlplane.policy.compiled import DEFAULT_RULE, Lane, Outcome, compiled_policy
from controlplane.policy.deadline_rule import Slack, held_back, is_spot, moved_reason, slack_of
from controlplane.policy.model import Policy
from controlplane.policy.reading import SignalReader
from controlplane.policy.rules import choose_rule
from controlplane.policy.spot_risk import CERTAIN, Risk, expected_usd, offer_risk

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

_PRIVATE_REASON = "private target for private data"
_NO_PRICE_NO_CAP = "no fresh spot price; no max price, so the provider caps it at on-demand"
_NO_LIST_PRICE = "no fresh on-demand price; no max price, so the list price is paid"
_NO_CANDIDATE = "no candidate: every target was rejected"
#: bound of a lane's guard cache (keys are URI schemes, so a handful in practice; tasks choose them)
_VERDICTS_LIMIT = 256


#: a lane that became a candidate: (lane, region, instance type, expected $/h, reasons, breaker probe, cost);
#: cost is (expected $ per completed task, risk) under ``rank: expected_cost``, else None. A plain tuple,
#: since plan() makes one per candidate on the scheduler's hot path
_Pick = tuple[Lane, str | None, str | None, float | None, list[str], str | None, "tuple[float | None, Risk] | None"]


def plan(task: Task, snapshot: SignalSnapshot, policy: Policy, now: datetime) -> PlacementPlan:
    """Decide where ``task`` may run, best first, and say why for every target.

    Pure and deterministic: it reads only its arguments (``now`` is the
    decision time, used for signal ages) and returns plain data. What it
    keeps between calls depends on the policy alone, or is a trace line
    that is the same text every time.
    """
    compiled = compiled_policy(policy)
    signals = SignalReader(snapshot, policy.thresholds, now)
    outcome, trace = choose_rule(compiled, task, signals)
    private_task = task.spec.data_sensitivity is DataSensitivity.PRIVATE
    actions = outcome.actions
    costing = Costing(policy, task) if actions.rank == "expected_cost" else None
    picks, rejected = _apply_signals(outcome.lanes[private_task], signals, private_task, task, costing)
    if costing is not None:
        picks = _by_expected_cost(picks, trace)
    replan_by = None
    if actions.deadline_aware and policy.deadlines is not None:
        slack = slack_of(task, policy.deadlines, policy.estimates, now)
        picks, replan_by = _deadline(picks, slack, task, rejected, trace)
    candidates = _candidates(picks, outcome, trace)
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
        replan_by=replan_by if not candidates else None,
    )


def _apply_signals(
    lanes: tuple[Lane, ...], signals: SignalReader, private_task: bool, task: Task, costing: Costing | None
) -> tuple[list[_Pick], dict[str, Rejection]]:
    """(the lanes that stay candidates, in preference order; why the others are rejected).

    The private-data rule and the rule's own exclusions depend on the policy
    alone, so the outcome already holds them; what is left is whether the
    target reaches the task's data, then what the signals say: budget,
    capacity, then price (:func:`_priced`).
    """
    tenant, spec = task.spec.tenant, task.spec
    schemes = (uri_scheme(spec.source_uri), uri_scheme(spec.target_uri), uri_scheme(spec.output_uri))
    rejected: dict[str, Rejection] = {}
    picks: list[_Pick] = []
    read, load_ttl = signals.read, signals.thresholds.load_ttl_seconds
    # the daily budgets are read once, and only when a cloud target is still in the running
    budget_pending = signals.thresholds.has_budget
    blocked: tuple[str, str] | None = None
    for lane in lanes:
        name = lane.name
        if rejected and name in rejected:
            continue
        out_of_reach = _out_of_reach(lane, spec, schemes)
        if out_of_reach is not None:
            rejected[name] = Rejection(target=name, code=out_of_reach[0], detail=out_of_reach[1])
            continue
        if lane.cloud:
            if budget_pending:
                blocked, budget_pending = _budget_block(signals, tenant), False
            if blocked is not None:
                rejected[name] = Rejection(target=name, code=blocked[0], detail=blocked[1])
                continue
        free = read(lane.capacity_signal, load_ttl)
        preempts: float | None = None
        if free is not None and free <= 0:
            # a full Kubernetes target whose pods of this priority preempt lower ones: the pod goes there anyway
            preemptible = None if lane.cloud else signals.preemptible(name, spec.priority.value)
            if preemptible is None or preemptible < 1:
                detail = f"no free {lane.capacity_unit}: {lane.capacity_signal} = {free:g}"
                if preemptible is not None:
                    detail += f", and no lower-priority pod a {spec.priority.value} pod may preempt"
                rejected[name] = Rejection(target=name, code="no_capacity", detail=detail)
                continue
            preempts = preemptible
        reasons = [lane.rank_reason]
        if private_task:
            reasons.append(_PRIVATE_REASON)
        if preempts is not None:
            reasons.append(
                f"no free {lane.capacity_unit}; {preempts:g} held by lower-priority pods, "
                f"which the {spec.priority.value} PriorityClass preempts"
            )
        elif free is not None:
            reasons.append(f"{free:g} free {lane.capacity_unit}(s)")
        if not lane.cloud:
            free_cost = None if costing is None else (0.0, CERTAIN)
            picks.append((lane, lane.region, lane.instance_type, None, reasons, None, free_cost))
            continue
        priced = _priced(lane, signals, reasons) if costing is None else priced_by_cost(lane, signals, reasons, costing)
        if isinstance(priced, Rejection):
            rejected[name] = priced
        else:
            picks.append(priced)
    return picks, rejected


def _out_of_reach(lane: Lane, spec: TaskSpec, schemes: tuple[str, str, str]) -> tuple[str, str] | None:
    """The data-plane guard for one target, remembered per URI schemes on the lane (plan()'s hot path)."""
    cacheable = "az" not in schemes
    if cacheable and schemes in lane.verdicts:
        return lane.verdicts[schemes]
    verdict = unreachable(
        provider=lane.provider,
        storage=lane.storage,
        source=spec.source_uri,
        target=spec.target_uri,
        output=spec.output_uri,
    )
    if cacheable and len(lane.verdicts) < _VERDICTS_LIMIT:
        lane.verdicts[schemes] = verdict
    return verdict


def _priced(lane: Lane, signals: SignalReader, reasons: list[str]) -> _Pick | Rejection:
    """The first offer whose fresh price is within the max and whose breaker lets it through."""
    ceiling = lane.ceiling
    over: list[str] = []
    tripped: list[str] = []
    read = signals.read
    for region, instance_type, key, sample_name, breaker_name in lane.offers:
        price = read(sample_name, lane.price_ttl)
        if price is None:
            continue
        if ceiling is None or price <= ceiling:
            state = None if breaker_name is None else signals.breaker(breaker_name)
            if state is not None and state >= BREAKER_OPEN:
                tripped.append(key)  # skipped like a price above the max
                continue
            reasons.append(f"{lane.price_label} {key} {price:.4f}{lane.within_suffix}")
            return (lane, region, instance_type, price, reasons, _probe(key, state, reasons) if state else None, None)
        over.append(f"{key} {price:.4f}{lane.over_suffix}")
    if lane.stale_price is None:
        return _uncapped(lane, signals, reasons, tripped, over)
    if tripped:
        return _breaker_rejection(lane.name, tripped, over)
    if over:
        detail = f"{lane.price_label} above the max price: " + "; ".join(over)
        return Rejection(target=lane.name, code="price_above_max", detail=detail)
    return lane.stale_price


def _uncapped(
    lane: Lane, signals: SignalReader, reasons: list[str], tripped: list[str], over: list[str]
) -> _Pick | Rejection:
    """No max price and no fresh price within reach: the first offer whose breaker lets it through."""
    for region, instance_type, key, _sample, breaker_name in lane.offers:
        state = None if breaker_name is None else signals.breaker(breaker_name)
        if state is not None and state >= BREAKER_OPEN:
            if key not in tripped:
                tripped.append(key)
            continue
        reasons.append(_NO_PRICE_NO_CAP if lane.market != ON_DEMAND else _NO_LIST_PRICE)
        return (lane, region, instance_type, None, reasons, _probe(key, state, reasons) if state else None, None)
    return _breaker_rejection(lane.name, tripped, over)


def _probe(key: str, state: float | None, reasons: list[str]) -> str | None:
    """``key`` when its breaker is half-open, so this launch is its probe (and says so)."""
    if state is not None and state > 0:
        reasons.append(f"circuit breaker {key} half-open: this launch is its probe")
        return key
    return None


class Costing:
    """What ``rank: expected_cost`` needs for one task: its length per provider and the risk priors."""

    __slots__ = ("lengths", "policy")

    def __init__(self, policy: Policy, task: Task) -> None:
        self.policy = policy
        work = policy.estimates.work(task.spec.kind)
        self.lengths = {provider: work + policy.estimates.overhead(provider) for provider in PROVIDERS}

    def cost(
        self, signals: SignalReader, lane: Lane, region: str | None, instance_type: str | None, price: float | None
    ) -> tuple[float | None, Risk]:
        length = self.lengths.get(lane.provider, 0.0)
        if lane.market == ON_DEMAND:
            risk = CERTAIN
        else:
            risk = offer_risk(
                signals, self.policy.spot_risk, lane.market_provider or lane.provider, region, instance_type, length
            )
        return expected_usd(price, length, risk), risk


def priced_by_cost(lane: Lane, signals: SignalReader, reasons: list[str], costing: Costing) -> _Pick | Rejection:
    """Like :func:`_priced`, but the offer with the lowest expected dollars per completed task, not the first."""
    ceiling = lane.ceiling
    over: list[str] = []
    tripped: list[str] = []
    best: tuple[float, float, int] | None = None
    chosen: _Pick | None = None
    for index, (region, instance_type, key, sample_name, breaker_name) in enumerate(lane.offers):
        price = signals.read(sample_name, lane.price_ttl)
        if price is None and lane.stale_price is not None:
            continue  # with a max price, an unknown price never chooses a cloud
        if price is not None and ceiling is not None and price > ceiling:
            over.append(f"{key} {price:.4f}{lane.over_suffix}")
            continue
        state = None if breaker_name is None else signals.breaker(breaker_name)
        if state is not None and state >= BREAKER_OPEN:
            tripped.append(key)
            continue
        usd, risk = costing.cost(signals, lane, region, instance_type, price)
        # an unknown price ranks after every known one; ties: the likelier to finish, then document order
        rank = (math.inf if usd is None else usd, -risk.chance, index)
        if best is None or rank < best:
            best = rank
            chosen = (lane, region, instance_type, price, [], key if state else None, (usd, risk))
    if chosen is None:
        if tripped:
            return _breaker_rejection(lane.name, tripped, over)
        if over:
            return Rejection(
                target=lane.name,
                code="price_above_max",
                detail=f"{lane.price_label} above the max price: " + "; ".join(over),
            )
        assert lane.stale_price is not None  # without a max price every offer is eligible, so one was chosen
        return lane.stale_price
    chosen_lane, region, instance_type, price, _, probe, cost = chosen
    key = spot_price_key(lane.market_provider or lane.provider, region, instance_type)
    if price is None:
        reasons.append(_NO_PRICE_NO_CAP if lane.market != ON_DEMAND else _NO_LIST_PRICE)
    else:
        reasons.append(f"{lane.price_label} {key} {price:.4f}{lane.within_suffix}")
    if probe is not None:
        reasons.append(f"circuit breaker {key} half-open: this launch is its probe")
    return (chosen_lane, region, instance_type, price, reasons, probe, cost)


def _by_expected_cost(picks: list[_Pick], trace: list[str]) -> list[_Pick]:
    """The picks cheapest first by expected dollars per completed task (unknown last, ties in rule order)."""
    for pick in picks:
        usd, risk = pick[6] or (None, CERTAIN)
        if pick[0].cloud:
            shown = "unknown (no price)" if usd is None else f"{usd:.4f} USD"
            chance = f"chance {risk.chance:.3f} to finish a try"
            if pick[0].market == ON_DEMAND:
                basis = "on-demand: no preemption"
            else:
                basis = f"{risk.samples} launch(es) in the history" if risk.samples else "no history: the priors"
            pick[4].append(f"expected cost per completed task {shown}, {chance} ({basis})")
        else:
            pick[4].append("expected cost per completed task 0 USD (private capacity, free at the margin)")
    ranked = sorted(picks, key=_expected_cost)  # stable: ties keep the rule's order
    if ranked != picks:
        trace.append("rank: expected cost per completed task, cheapest first")
    return ranked


def _expected_cost(pick: _Pick) -> float:
    cost = pick[6]
    return math.inf if cost is None or cost[0] is None else cost[0]


def _deadline(
    picks: list[_Pick], slack: Slack, task: Task, rejected: dict[str, Rejection], trace: list[str]
) -> tuple[list[_Pick], datetime | None]:
    """Apply the deadline rule to the picks: hold on-demand back, or put it (and private) before spot."""
    if not slack.tight:
        usable_from = slack.usable_from(task.created_at)
        kept = []
        for pick in picks:
            if pick[0].market == ON_DEMAND:
                rejected[pick[0].name] = held_back(pick[0].name, slack, usable_from)
            else:
                kept.append(pick)
        if len(kept) < len(picks):
            trace.append(f"deadline rule: {slack.numbers()}: on-demand held back")
        return kept, usable_from
    first = [pick for pick in picks if not is_spot(pick[0].market)]
    if first and len(first) < len(picks):
        for pick in first:
            pick[4].append(moved_reason(slack, pick[0].market))
        trace.append(f"deadline rule: {slack.numbers()}: on-demand and private before spot")
    return first + [pick for pick in picks if is_spot(pick[0].market)], None


def _breaker_rejection(target: str, tripped: list[str], over: list[str]) -> Rejection:
    detail = "circuit breaker open (recent preemptions or capacity errors) on " + ", ".join(tripped)
    if over:
        detail += "; spot price above the max price: " + "; ".join(over)
    return Rejection(target=target, code="breaker_open", detail=detail)


def _candidates(picks: list[_Pick], outcome: Outcome, trace: list[str]) -> tuple[Candidate, ...]:
    """The picks as candidates, best first; with ``hedge: N`` the first N share hedge group 1."""
    hedged = min(outcome.actions.hedge, len(picks)) if outcome.actions.hedge > 1 and len(picks) > 1 else 0
    if hedged:  # the candidates are built once, hedge group included
        hedge_reason, hedge_line = outcome.hedge_lines[hedged]
        for pick in picks[:hedged]:
            pick[4].append(hedge_reason)
        trace.append(hedge_line)
    return tuple(
        Candidate(
            target=lane.name,
            provider=lane.provider,
            private=lane.private,
            region=region,
            instance_type=instance_type,
            max_price_usd_h=lane.ceiling,
            expected_usd_h=expected,
            market=lane.market,
            expected_usd_per_task=None if cost is None or cost[0] is None else round(cost[0], 6),
            completion_chance=None if cost is None else round(cost[1].chance, 4),
            history_launches=None if cost is None else cost[1].samples,
            hedge_group=1 if place < hedged else None,
            breaker_probe=probe,
            reasons=tuple(reasons),
        )
        for place, (lane, region, instance_type, expected, reasons, probe, cost) in enumerate(picks)
    )


def _budget_block(signals: SignalReader, tenant: str) -> tuple[str, str] | None:
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
