"""What happens to a task whose plan leaves nothing to launch now: it waits, or it fails, and why.

A scheduler queues. A plan with no candidate because of something time can
fix (no free capacity, a stale price, an open breaker, a price above the
max, a spent or unknown daily budget) sends the task back to ``queued``
with the reason as its queue reason; it is planned again as soon as what it
waits for changes (``Scheduler.place_batch``), or after a long safety-net
wait when no signal said so, until
it is placed, or until its own deadline or the policy's
``thresholds.max_queue_seconds`` passes: only then does it fail, naming
the limit and the last reason. A plan that nothing could ever satisfy
(private data and no private target, every target excluded by a rule, no
target at all) fails at once, as does a plan whose candidates this
scheduler may not launch (a provider not configured here). The reasoning
is in docs/reliability.md, "Queueing". A launch that every candidate
refused for want of room (capacity, the market price) waits the same way
(:func:`shortage_wait`), without spending one of the task's attempts.

Pure: the caller passes the clock's ``now``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controlplane.domain import PlacementPlan, ProviderError, Task
from controlplane.policy import Thresholds
from controlplane.store import Shortage

__all__ = [
    "WAITABLE_CODES",
    "WAIT_RECHECK_MAX_S",
    "WAIT_RECHECK_S",
    "NoLaunch",
    "max_queue_seconds",
    "recheck_after",
    "no_launch",
    "overdue",
    "shortage_wait",
]

#: rejection codes that time can lift; any other code (``private_data``, ``excluded_by_rule``, a code
#: this version does not know) cannot be waited out, so a plan made only of those fails at once
WAITABLE_CODES = frozenset(
    {
        "no_capacity",
        "stale_price",
        "breaker_open",
        "price_above_max",
        "budget_exhausted",
        "budget_unknown",
        # the deadline rule holds on-demand back while the slack allows: the plan says until when (replan_by)
        "deadline_slack",
    }
)
#: the safety net: a waiting task is planned again after this long at the latest, or after as long as it has
#: already waited, whichever is longer, up to :data:`WAIT_RECHECK_MAX_S` (:func:`recheck_after`). What it waits for
#: wakes it at once: a slot freed on its target, a breaker that closes (or turns half-open: one task per target), a
#: new price, the budget day, a rule's ``when`` or the policy changing (``Placing._wake_waiting``,
#: ``scheduler/wakeups.py``), and the deadline rule's ``replan_by`` bounds the sleep; so, as Kubernetes does with
#: unschedulable pods (moved back on the cluster events that can help them, flushed after a while), no timer
#: re-plans it sooner. It was a backoff doubling from 1 s up to 30 minutes: in the launch-day simulator at scale 0.05
#: the short early re-plans were most of the 12.6 plans per task (316,764 plans for 25,086 tasks); the flat 30
#: minutes made 5.5 plans per task with as many tasks on time and 10% fewer failed (docs/performance.md, issue 16)
WAIT_RECHECK_S = 1800.0
#: the longest sleep between two plans of a waiting task. A flat 30 minutes still re-planned the tasks that wait
#: for hours (low priority work holding out for spot) every half hour: at scale 0.01 of the launch day 13,487 of
#: 30,709 plans were such rechecks, 114 of them (0.8%) launched anything, and those traced were half-open breakers'
#: probes. Growing with the wait (30, 30, 60, 120, 240 minutes) makes a 12-hour wait 6 rechecks instead of 24;
#: a target's free capacity is asked again every ``wakeups.ASK_AGAIN_S`` so another scheduler's waiting tasks are
#: never left to this timer alone
WAIT_RECHECK_MAX_S = 4 * 3600.0
_DEFAULT_MAX_QUEUE_S = Thresholds().max_queue_seconds


@dataclass(frozen=True, kw_only=True)
class NoLaunch:
    """A task with nothing to launch now: ``wait`` (its queue reason, until ``not_before``) or ``failure``."""

    wait: str | None = None
    not_before: datetime | None = None
    failure: str | None = None


def max_queue_seconds(policy: Any) -> float:
    """The policy's ``thresholds.max_queue_seconds``; the default for a missing or nonsensical value.

    Like ``FailoverRules.of``: a policy stand-in without thresholds still
    gets a bounded wait, never "wait forever".
    """
    value = getattr(getattr(policy, "thresholds", None), "max_queue_seconds", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return _DEFAULT_MAX_QUEUE_S


def overdue(*, task: Task, now: datetime) -> str | None:
    """Why a waiting task must not be launched any more: its deadline passed while it waited; else None.

    Work whose deadline has passed is wasted, so a slot that frees at the
    last moment is not given to it. Only waiting tasks are held to it here:
    the deadline of placed and running work is followed elsewhere.
    """
    if task.queue_reason is None or task.spec.deadline_seconds is None:
        return None
    if now < task.created_at + timedelta(seconds=task.spec.deadline_seconds):
        return None
    waited = (now - (task.queued_since or now)).total_seconds()
    return (
        f"waited {waited:.0f} s (the task's deadline_seconds {task.spec.deadline_seconds} s) "
        f"without a placement: {task.queue_reason}"
    )


def recheck_after(waited_s: float) -> float:
    """The safety net's sleep for a task that has waited ``waited_s`` so far: as long again, within bounds."""
    return min(max(waited_s, WAIT_RECHECK_S), WAIT_RECHECK_MAX_S)


def no_launch(
    *, task: Task, decision: PlacementPlan, history: list[str], now: datetime, max_queue_s: float
) -> NoLaunch:
    """Whether a task with nothing launchable waits (and until when) or fails now (and why).

    ``history`` holds the candidates this scheduler refused (provider not
    configured here, private data on a non-private target): a plan whose
    candidates were all refused fails, as before queueing existed.
    """
    if decision.candidates:
        return NoLaunch(failure="every candidate failed to launch: " + "; ".join(history))
    reasons = "; ".join(f"{r.target}: {r.code}" for r in decision.rejections) or "no targets"
    if not any(r.code in WAITABLE_CODES for r in decision.rejections):
        return NoLaunch(failure=f"no placement: {reasons}")
    since = task.queued_since or now
    waited = (now - since).total_seconds()
    limits = [(since + timedelta(seconds=max_queue_s), f"thresholds.max_queue_seconds {max_queue_s:g} s")]
    if task.spec.deadline_seconds is not None:
        deadline = task.created_at + timedelta(seconds=task.spec.deadline_seconds)
        limits.append((deadline, f"the task's deadline_seconds {task.spec.deadline_seconds} s"))
    until, limit = min(limits, key=lambda pair: pair[0])
    if now >= until:
        return NoLaunch(failure=f"waited {waited:.0f} s ({limit}) without a placement: {reasons}")
    # planned again once more at the limit at the latest, so it fails close to it, not a backoff later
    not_before = min(now + timedelta(seconds=recheck_after(waited)), until)
    if decision.replan_by is not None and now < decision.replan_by < not_before:
        not_before = decision.replan_by  # on-demand becomes usable then: no backoff may sleep past it
    return NoLaunch(wait=reasons, not_before=not_before)


def shortage_wait(refused: Sequence[tuple[str, ProviderError]], *, max_queue_s: float) -> Shortage | None:
    """How a task whose every candidate refused the launch waits for room; None when a refusal was not a shortage.

    ``refused`` is (target, error) per refused candidate. Only when every
    one of them is a shortage (``ProviderError.shortage``: capacity, the
    market price) does the task wait without spending an attempt; its queue
    reason names each target once with the backend's refusal code.

    Not with the plan's codes (``no_capacity``): the backend said no where
    the signals said there was room, so the free capacity a target reports
    must not wake the task straight back to the same refusal (in the
    launch-day simulator that woke two tasks 1,000 times within one
    instant). It sleeps its backoff, which grows with every refusal, and a
    change of policy wakes it as it wakes every waiting task.
    """
    if not refused or not all(error.shortage for _, error in refused):
        return None
    waiting_for = dict.fromkeys(f"{target}: {error.code}" for target, error in refused)
    return Shortage(queue_reason="; ".join(waiting_for), max_wait_seconds=max_queue_s)
