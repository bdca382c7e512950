"""What ``plan()`` derives from a policy alone, built once and kept on the policy.

For each rule (and the implicit default) an :class:`Outcome`: which targets
the private-data rule and the rule's own actions reject, and a :class:`Lane`
per target still in the running, holding everything but the signals (its
ceiling price, its offers in the order the price check tries them, its
reason texts). :class:`CompiledPolicy` adds the rule scans: which rules a
task's priority, data sensitivity, kind and tenant leave to check, with the
trace lines of those they rule out.
"""

from __future__ import annotations

from controlplane.domain import (
    CAPACITY_SOURCE,
    ON_DEMAND,
    ON_DEMAND_PRICE_SOURCE,
    SPOT_PRICE_SOURCE,
    Rejection,
    Target,
    on_demand_price_ttl,
    spot_price_key,
)
from controlplane.domain.reliability import BREAKER_SOURCE
from controlplane.policy.freshness import price_ttl
from controlplane.policy.model import Actions, Policy, Rule, Thresholds

__all__ = ["DEFAULT_RULE", "CompiledPolicy", "Lane", "Outcome", "compiled_policy", "max_price_of", "offers_of"]

#: the name the trace gives the implicit fallback rule
DEFAULT_RULE = "default"
_NO_ACTIONS = Actions()
#: bound of every cache whose keys come from tasks (tenants are open-ended)
_LINE_CACHE_LIMIT = 4096
#: where a policy keeps what plan() derives from it (Rule and Match cache theirs the same way)
_COMPILED_ATTR = "_plan_compiled"
_PRIVATE_DETAIL = "the task's data is private and this target is not (built-in rule, not a policy choice)"


# -- targets ----------------------------------------------------------------------------------------


def max_price_of(target: Target, actions: Actions) -> float | None:
    """The lower of the target's and the rule's max price; None when neither sets one."""
    prices = [p for p in (target.max_price_usd_h, actions.max_price_usd_h) if p is not None]
    return min(prices) if prices else None


def offers_of(target: Target, actions: Actions) -> list[tuple[str | None, str | None]]:
    """(region, instance type) pairs in the order the price check tries them (the rule's type wins)."""
    regions: tuple[str | None, ...] = target.regions or (None,)
    types: tuple[str | None, ...] = (
        (actions.instance_type,) if actions.instance_type else (target.instance_types or (None,))
    )
    return [(region, instance_type) for region in regions for instance_type in types]


def _rule_exclusions(policy: Policy, actions: Actions, rule_name: str, order: list[str]) -> dict[str, str]:
    """Targets the rule rules out, with the reason, in document order."""
    out: dict[str, str] = {}
    for target in policy.targets:
        # a pod on an EKS or AKS node pool is on that cloud, for use_cloud and cloud_provider as for pricing
        name, cloud = target.name, target.market_provider
        if name not in order:
            out[name] = f"rule {rule_name} does not list it"
        elif name in actions.exclude:
            out[name] = f"rule {rule_name} excludes it"
        elif actions.require and name not in actions.require:
            out[name] = f"rule {rule_name} requires {', '.join(actions.require)}"
        elif actions.use_cloud is True and cloud is None:
            out[name] = f"rule {rule_name} says use_cloud: true and {name} is not a cloud target"
        elif actions.use_cloud is False and cloud is not None:
            out[name] = f"rule {rule_name} says use_cloud: false and {name} is a cloud target"
        elif actions.cloud_provider and cloud is not None and cloud != actions.cloud_provider:
            out[name] = f"rule {rule_name} says cloud_provider: {actions.cloud_provider}"
    return out


# -- the trace lines of rules a task's enum fields rule out -----------------------------------------


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


# -- what plan() derives once per policy ------------------------------------------------------------


class Lane:
    """One target still in the running after a rule's static rejections: everything but the signals."""

    __slots__ = (
        "capacity_signal",
        "capacity_unit",
        "ceiling",
        "cloud",
        "instance_type",
        "market",
        "market_provider",
        "name",
        "offers",
        "over_suffix",
        "price_label",
        "price_ttl",
        "private",
        "provider",
        "rank_reason",
        "region",
        "stale_price",
        "storage",
        "verdicts",
        "within_suffix",
    )

    def __init__(self, target: Target, actions: Actions, rank_reason: str, thresholds: Thresholds) -> None:
        self.name, self.provider, self.private = target.name, target.provider, target.private
        #: where the target's workers read and write: decides which task URIs it can reach
        self.storage = target.storage
        #: (source, target, output) URI schemes -> the guard's (code, detail) or None; only for tasks with no
        #: az:// URI, whose reach depends on the scheme alone (an az:// one also depends on its account)
        self.verdicts: dict[tuple[str, str, str], tuple[str, str] | None] = {}
        #: whose market prices the target: its own cloud, or the cloud of a kubernetes target's node pool
        self.market_provider = market_provider = target.market_provider
        self.cloud = market_provider is not None
        #: None off the clouds; on-demand offers read the list price and have no spot breaker
        self.market: str | None = target.market if self.cloud else None
        on_demand = self.market == ON_DEMAND
        priced_by = market_provider or target.provider
        self.price_ttl = on_demand_price_ttl(priced_by) if on_demand else price_ttl(thresholds, priced_by)
        self.price_label = "on-demand price" if on_demand else "spot price"
        price_source = ON_DEMAND_PRICE_SOURCE if on_demand else SPOT_PRICE_SOURCE
        self.capacity_signal = f"{CAPACITY_SOURCE}/{target.name}"
        #: what the capacity signal counts, for receipts: the local provider's are worker slots, not GPUs
        self.capacity_unit = "local slot" if target.provider == "local" else "GPU"
        self.rank_reason = rank_reason
        self.ceiling = ceiling = max_price_of(target, actions)
        self.region: str | None = target.regions[0] if target.regions else None
        self.instance_type: str | None = actions.instance_type or (
            target.instance_types[0] if target.instance_types else None
        )
        #: (region, instance type, snapshot key, price sample name, breaker sample name or None), in the order
        #: the price check tries them; the breakers count spot preemptions and refusals, not on-demand's
        self.offers = tuple(
            (region, instance_type, key, f"{price_source}/{key}", None if on_demand else f"{BREAKER_SOURCE}/{key}")
            for region, instance_type in offers_of(target, actions)
            for key in (spot_price_key(priced_by, region, instance_type),)
        )
        self.within_suffix = " USD/h" if ceiling is None else f" USD/h <= max {ceiling:g}"
        self.over_suffix = "" if ceiling is None else f" > max {ceiling:g}"
        self.stale_price = (
            None
            if ceiling is None
            else Rejection(
                target=target.name,
                code="stale_price",
                detail=f"max price {ceiling:g} USD/h but no fresh {self.price_label} "
                "(a stale price never chooses a cloud)",
            )
        )


class Outcome:
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
        lanes: tuple[list[Lane], list[Lane]] = ([], [])
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
            lane = Lane(policy.targets[index], actions, reason, policy.thresholds)
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
ScanKey = tuple[str, str, str, str]
#: ((no-match lines before it, index) for each rule still to check, no-match lines after the last)
_Scan = tuple[tuple[tuple[tuple[str, ...], int], ...], tuple[str, ...]]


class CompiledPolicy:
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
        self.default = Outcome(policy, None, self.position)
        self.outcomes: dict[int, Outcome] = {}
        self.scans: dict[ScanKey, _Scan] = {}

    def outcome(self, index: int) -> Outcome:
        """What rule ``index`` does to the targets, built the first time it is chosen."""
        outcome = self.outcomes.get(index)
        if outcome is None:
            outcome = self.outcomes[index] = Outcome(self.policy, self.policy.rules[index], self.position)
        return outcome

    def scan(self, key: ScanKey) -> _Scan:
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


def compiled_policy(policy: Policy) -> CompiledPolicy:
    """The policy's :class:`CompiledPolicy`, built on first use and kept on the policy."""
    compiled: CompiledPolicy | None = policy.__dict__.get(_COMPILED_ATTR)
    if compiled is None:
        # kept on the policy itself: a hot reload's new policy starts empty and the old one takes its cache along
        compiled = CompiledPolicy(policy)
        object.__setattr__(policy, _COMPILED_ATTR, compiled)
    return compiled
