"""The parsed policy: targets, thresholds and ordered rules, as frozen values.

A policy is parsed once from JSON (:func:`controlplane.policy.parse_policy`)
and never changes afterwards; ``plan()`` only reads it. Its ``version`` is
the sha256 of the document's canonical JSON (sorted keys, no whitespace,
UTF-8), so the same document always has the same version whatever its
formatting. docs/policies.md is the reference for the JSON form.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from controlplane.domain import CLOUD_PROVIDERS, PROVIDERS, DataSensitivity, Priority, Target, TaskKind

# provider names live in the domain (the signal pollers use them too); re-exported here
from controlplane.domain.fields import FieldError

__all__ = [
    "CLOUD_PROVIDERS",
    "PROVIDERS",
    "Actions",
    "Conditions",
    "DeadlineRule",
    "Estimates",
    "FIRST_HEARTBEAT_DEFAULTS",
    "Match",
    "Policy",
    "PolicyError",
    "Range",
    "Rule",
    "SpotRisk",
    "Thresholds",
    "canonical_json",
    "policy_version",
]


class PolicyError(FieldError):
    """A policy document that is not valid; ``path`` is the JSON path of the bad field."""


@dataclass(frozen=True, kw_only=True)
class Range:
    """An inclusive numeric range; a missing bound is open."""

    min: float | None = None
    max: float | None = None

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` is inside; an unknown value is inside only an unbounded range."""
        if value is None:
            return self.min is None and self.max is None
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min:g}..{self.max:g}"
        if self.min is not None:
            return f">= {self.min:g}"
        return f"<= {self.max:g}" if self.max is not None else "any"


@dataclass(frozen=True, kw_only=True)
class Match:
    """What a rule applies to, on the task alone; an empty field means "any"."""

    priority: tuple[Priority, ...] = ()
    data_sensitivity: tuple[DataSensitivity, ...] = ()
    kind: tuple[TaskKind, ...] = ()
    tenant: tuple[str, ...] = ()
    #: label -> accepted values; ``("*",)`` means "present, any value"
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    deadline_seconds: Range | None = None
    input_bytes: Range | None = None

    @cached_property
    def listed(self) -> dict[str, str]:
        """Each field's accepted values, joined once for the trace (plan() runs hot)."""
        return {
            "priority": ", ".join(self.priority),
            "data_sensitivity": ", ".join(self.data_sensitivity),
            "kind": ", ".join(self.kind),
            "tenant": ", ".join(self.tenant),
        }


@dataclass(frozen=True, kw_only=True)
class Conditions:
    """What the live signals must show for a rule to apply; every given condition must hold.

    A stale or missing signal makes its condition false, so an unknown load
    or price is never the reason a rule (for example "go to the cloud") fires.
    """

    #: targets that must be at peak load (utilisation, free GPUs or queue depth past the thresholds)
    peak: tuple[str, ...] = ()
    #: target -> utilisation (0..1) it must be above
    gpu_utilization_above: Mapping[str, float] = field(default_factory=dict)
    #: target -> free GPUs it must be below
    free_gpus_below: Mapping[str, float] = field(default_factory=dict)
    queue_depth_above: float | None = None
    #: at least one of the rule's cloud targets has a fresh spot price within its max price
    spot_price_under_budget: bool = False
    budget_left_today_usd_above: float | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.peak
            or self.gpu_utilization_above
            or self.free_gpus_below
            or self.queue_depth_above is not None
            or self.spot_price_under_budget
            or self.budget_left_today_usd_above is not None
        )


@dataclass(frozen=True, kw_only=True)
class Actions:
    """What a matching rule does to the candidate list."""

    #: preferred targets, best first; empty means every target in document order
    targets: tuple[str, ...] = ()
    #: never these (rejected ``excluded_by_rule``)
    exclude: tuple[str, ...] = ()
    #: only these, whatever else the rule says (others rejected ``not_required``)
    require: tuple[str, ...] = ()
    #: True: cloud targets only; False: private-cloud and local targets only; None: no filter
    use_cloud: bool | None = None
    cloud_provider: str | None = None
    #: replaces the target's first instance type / VM size
    instance_type: str | None = None
    #: caps every target's max spot price
    max_price_usd_h: float | None = None
    #: launch on this many candidates at once, keep the first that runs (1 = no hedging)
    hedge: int = 1
    #: apply the policy's ``deadlines`` rule: on-demand only once the task's slack runs out
    deadline_aware: bool = False
    #: "order": the rule's target order; "expected_cost": expected dollars per completed task, cheapest first
    rank: str = "order"


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One rule: when ``match`` and ``when`` hold, ``actions`` shape the plan."""

    name: str
    match: Match = field(default_factory=Match)
    when: Conditions = field(default_factory=Conditions)
    actions: Actions = field(default_factory=Actions)
    description: str = ""

    @cached_property
    def no_match_lines(self) -> dict[tuple[str, str], str]:
        """Trace lines already written for (field, task value); filled by plan(), same text every time."""
        return {}

    # the minimal language's names, still used by callers and tests
    @property
    def targets(self) -> tuple[str, ...]:
        return self.actions.targets

    @property
    def exclude(self) -> tuple[str, ...]:
        return self.actions.exclude


#: the documented first-heartbeat limits (docs/reliability.md): a local process starts in seconds; a pod may
#: pull its image; a VM boots, installs its bootstrap and pulls a multi-GB GPU image before the worker runs
FIRST_HEARTBEAT_DEFAULTS: Mapping[str, float] = MappingProxyType(
    {"local": 120.0, "kubernetes": 600.0, "aws": 900.0, "azure": 900.0}
)


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """Documented defaults for peak load, signal freshness, the daily budgets and the spot circuit breaker."""

    #: a target is at peak when its GPU utilisation is above this (0..1) ...
    peak_gpu_utilization: float = 0.85
    #: ... or its free GPUs are below this ...
    peak_free_gpus_below: float = 1.0
    #: ... or the queue holds more than this many tasks
    peak_queue_depth: float = 100.0
    #: spot prices older than this are stale (never a reason to choose a cloud). None: each price's own
    #: TTL, its provider's (domain SPOT_PRICE_TTL_SECONDS: aws 600 s, azure 3600 s); a value only cuts
    #: that shorter (policy/freshness.py), so a default can never make a working poller's price stale
    price_ttl_seconds: float | None = None
    #: utilisation, free GPUs and queue depth older than this are stale
    load_ttl_seconds: float = 120.0
    #: the day's cloud budget (UTC day, every tenant together); None: no overall budget, and no
    #: ``budget_left_today_usd_above`` condition can hold. Spent -> cloud targets rejected ``budget_exhausted``
    daily_budget_usd: float | None = None
    #: each tenant's own daily cloud budget, tenant -> USD; ``"*"`` applies to every tenant not listed.
    #: The JSON may give one number, read as ``{"*": number}``. Empty: no tenant budgets
    tenant_daily_budget_usd: Mapping[str, float] = field(default_factory=dict)
    #: spot circuit breaker, per (provider, region, instance type); the breaker poller applies these
    #: (from the base policy: the breakers are shared by every tenant). Rates count preemptions and
    #: capacity errors against attempts that got capacity (running or succeeded) over the window.
    breaker_window_seconds: float = 1800.0
    #: fewer attempts than this in the window never open a breaker (nor keep a half-open one from closing)
    breaker_min_attempts: int = 5
    #: closed -> open when the failure rate reaches this (0 < rate <= 1) ...
    breaker_open_failure_rate: float = 0.5
    #: ... and half-open -> closed, after a successful probe, only at or below this (below the open rate:
    #: the gap is the hysteresis that keeps a breaker from flapping on a rate hovering near one threshold)
    breaker_close_failure_rate: float = 0.2
    #: how long an opened breaker blocks before it lets one probe through ...
    breaker_cooldown_seconds: float = 300.0
    #: ... doubled after each failed probe (or a reopening within a window of closing), up to this
    breaker_max_cooldown_seconds: float = 3600.0
    #: failover after launch (the executor reads these; docs/reliability.md): attempts per task that ended
    #: in a retryable way (preempted, lost, crash, heartbeat, unschedulable) before the task fails ...
    max_attempts: int = 5
    #: ... and the wait before re-planning, doubling per failover up to the maximum
    retry_backoff_seconds: float = 2.0
    retry_backoff_max_seconds: float = 60.0
    #: a running worker silent this long is lost: its resource is cancelled, then the task fails over
    heartbeat_timeout_seconds: float = 60.0
    #: a Kubernetes pod unschedulable this long is given up on that target
    unschedulable_timeout_seconds: float = 120.0
    #: a task with no placement waits in the queue (no free capacity, stale signals, an open breaker, a
    #: spent budget) at most this long before it fails, naming why (docs/reliability.md, "Queueing")
    max_queue_seconds: float = 3600.0
    #: per provider: an attempt whose worker has not called in once this long after its launch is lost
    #: (cancelled, then failed over); a VM boots and pulls the image first, a local process only starts
    first_heartbeat_timeout_seconds: Mapping[str, float] = field(default_factory=lambda: dict(FIRST_HEARTBEAT_DEFAULTS))

    def first_heartbeat_timeout(self, provider: str) -> float:
        """The provider's first-heartbeat limit; a provider the policy language does not know gets the longest."""
        limits = self.first_heartbeat_timeout_seconds
        return limits.get(provider, max(limits.values(), default=max(FIRST_HEARTBEAT_DEFAULTS.values())))

    def tenant_budget(self, tenant: str) -> float | None:
        """The tenant's own daily cloud budget: its entry, else the ``"*"`` entry, else None."""
        budgets = self.tenant_daily_budget_usd
        if not budgets:
            return None
        own = budgets.get(tenant)
        return budgets.get("*") if own is None else own

    @property
    def has_budget(self) -> bool:
        """Whether any daily budget (overall or per tenant) is set."""
        return self.daily_budget_usd is not None or bool(self.tenant_daily_budget_usd)


#: a launch's documented overhead before the work starts, per provider: a pod is scheduled and pulls a
#: cached image; a VM boots, runs its bootstrap and pulls a multi-GB GPU image (docs/policies.md)
LAUNCH_OVERHEAD_DEFAULTS: Mapping[str, float] = MappingProxyType(
    {"local": 5.0, "kubernetes": 20.0, "aws": 150.0, "azure": 200.0}
)


@dataclass(frozen=True, kw_only=True)
class Estimates:
    """What placement assumes about a task before it runs (``estimates`` in the JSON)."""

    #: GPU-seconds of work per task kind on the reference GPU; an unknown kind counts as the largest
    work_seconds: Mapping[str, float] = field(default_factory=lambda: {"image": 10.0, "video": 1800.0})
    #: seconds from a launch request to the worker's first frame, per provider
    launch_overhead_seconds: Mapping[str, float] = field(default_factory=lambda: dict(LAUNCH_OVERHEAD_DEFAULTS))

    def work(self, kind: str) -> float:
        known = self.work_seconds
        return known.get(kind, max(known.values(), default=0.0))

    def overhead(self, provider: str) -> float:
        known = self.launch_overhead_seconds
        return known.get(provider, max(known.values(), default=0.0))


@dataclass(frozen=True, kw_only=True)
class DeadlineRule:
    """The deadline rule (``deadlines`` in the JSON), applied by rules with ``deadline_aware: true``.

    Slack is what a task can still lose: its deadline, less the time since it
    was submitted, less its work. While the slack is at least the restart
    overhead (the time a failed spot try costs before a replacement works:
    its own boot, noticing the loss, the replacement's boot), spot and the
    queue are used and on-demand is held back; below it, on-demand and
    private targets come before spot.
    """

    #: the deadline of a task without ``deadline_seconds``, per priority; a priority not listed has none
    sla_seconds: Mapping[str, float] = field(default_factory=dict)
    restart_overhead_seconds: float = 420.0


@dataclass(frozen=True, kw_only=True)
class SpotRisk:
    """Priors of the learned spot risk (``spot_risk`` in the JSON): what an offer with no history is assumed to do.

    They count as that many observations, added to the offer's recorded
    history (``spot_history/...`` samples), so a few real outcomes move the
    estimate and many dominate it.
    """

    #: a launch is refused this often (capacity) ...
    prior_refusal_rate: float = 0.1
    #: ... counted as this many launches
    prior_launches: float = 10.0
    #: a running spot instance is reclaimed once per this many hours ...
    prior_hours_between_preemptions: float = 10.0
    #: ... counted as this many hours of running
    prior_hours: float = 10.0
    #: how far back the recorded history goes (older attempts say little about today's market)
    history_hours: float = 24.0


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A parsed, validated policy document."""

    #: sha256 (hex) of the document's canonical JSON
    version: str
    targets: tuple[Target, ...]
    rules: tuple[Rule, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    estimates: Estimates = field(default_factory=Estimates)
    #: None: no deadline rule (a rule's ``deadline_aware`` then does nothing, and parsing refuses it)
    deadlines: DeadlineRule | None = None
    spot_risk: SpotRisk = field(default_factory=SpotRisk)
    #: True when the document was the seed's ``task_rules`` form
    from_seed: bool = False

    def for_tenant(self, tenant: str) -> Policy:
        """A lone policy applies to every tenant (a PolicySet answers with the tenant's overlay)."""
        return self

    def target(self, name: str) -> Target | None:
        """The target called ``name``, if the policy defines one."""
        for target in self.targets:
            if target.name == name:
                return target
        return None


def canonical_json(document: Any) -> str:
    """The canonical form hashed into a policy version: sorted keys, no whitespace, no NaN."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def policy_version(document: Mapping[str, Any]) -> str:
    """sha256 hex digest of ``canonical_json(document)``."""
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()
