"""Moving an attempt and its task to an outcome, whoever reports it first.

What the outcome is, is decided by :func:`controlplane.domain.verdict.verdict`
(``is_retryable`` and ``never_called_in`` live there too and are re-exported
here); this module applies it to the store, and holds the tenant's
:class:`FailoverRules`.

The worker's callback and the scheduler's own status poll can both report
the same outcome; whichever comes second finds the attempt final and does
nothing, so an outcome is applied exactly once.

An attempt that ended in a way another attempt may fix (preempted, lost, a
crash the worker did not classify as the input's fault) does not fail its
task: the scheduler decides, with the tenant's policy in hand, whether the
task is planned again or has used up its attempts (see
:class:`FailoverRules` and ``Scheduler.follow``). docs/reliability.md has
the whole table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.domain import AttemptState, TaskState
from controlplane.domain.exit_codes import TERMINAL_EXIT_CODES
from controlplane.domain.verdict import is_retryable, never_called_in
from controlplane.policy import Thresholds
from controlplane.store import Outcome, Store

__all__ = ["TERMINAL_EXIT_CODES", "FailoverRules", "advance", "is_retryable", "never_called_in"]

#: exit 75 and 128+N are reported by the providers as PREEMPTED and LOST; a FAILED status that still
#: carries one was classified so on purpose (the task's deadline, our own cancel), so it is not retried.
#: The terminal codes (2 usage, 65 EX_DATAERR, 69 EX_UNAVAILABLE: a broken model cache or driver is an
#: operator's alert, and the re-plan could pick the same target again) are never retried.


#: the documented defaults live in one place, the policy model
_DEFAULTS = Thresholds()


@dataclass(frozen=True, kw_only=True)
class FailoverRules:
    """How far failover after launch goes for one tenant: the policy's ``thresholds`` (docs/reliability.md).

    ``of`` reads the thresholds by name and falls back to the policy model's
    defaults for a missing or nonsensical value, so an object that is not a
    parsed policy (a stand-in in tests, a planner's own policy type) still
    gets bounded retries.
    """

    #: attempts that reached a backend, per task; the one that ends the last of them fails the task
    max_attempts: int = _DEFAULTS.max_attempts
    #: wait before the task may be claimed again after its first failover ...
    retry_backoff_seconds: float = _DEFAULTS.retry_backoff_seconds
    #: ... doubled after each further one, up to this
    retry_backoff_max_seconds: float = _DEFAULTS.retry_backoff_max_seconds
    #: a running attempt whose worker has called in, and then not for this long, is lost
    heartbeat_timeout_seconds: float = _DEFAULTS.heartbeat_timeout_seconds
    #: a pod reported unschedulable for longer than this is given up (cancel, fail over)
    unschedulable_timeout_seconds: float = _DEFAULTS.unschedulable_timeout_seconds
    #: per provider: an attempt whose worker never called in, this long after its launch, is lost
    first_heartbeat_timeout_seconds: Mapping[str, float] = field(
        default_factory=lambda: dict(_DEFAULTS.first_heartbeat_timeout_seconds)
    )

    @classmethod
    def of(cls, policy: Any) -> FailoverRules:
        """The rules of ``policy`` (a Policy, or anything with an optional ``thresholds``)."""
        thresholds = getattr(policy, "thresholds", None)
        defaults = cls()

        def number(name: str) -> float:
            value = getattr(thresholds, name, None)
            fallback = float(getattr(defaults, name))
            # a missing or nonsensical value falls back: a bad threshold must never mean "retry forever"
            return float(value) if isinstance(value, int | float) and value > 0 else fallback

        given = getattr(thresholds, "first_heartbeat_timeout_seconds", None)
        first_heartbeat = dict(defaults.first_heartbeat_timeout_seconds)
        if isinstance(given, Mapping):
            for provider, value in given.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                    first_heartbeat[str(provider)] = float(value)
        return cls(
            first_heartbeat_timeout_seconds=first_heartbeat,
            max_attempts=max(1, int(number("max_attempts"))),
            retry_backoff_seconds=number("retry_backoff_seconds"),
            retry_backoff_max_seconds=number("retry_backoff_max_seconds"),
            heartbeat_timeout_seconds=number("heartbeat_timeout_seconds"),
            unschedulable_timeout_seconds=number("unschedulable_timeout_seconds"),
        )

    def first_heartbeat_limit(self, provider: str) -> float:
        """How long after its launch an attempt on ``provider`` may go without calling in once."""
        limits = self.first_heartbeat_timeout_seconds
        return limits.get(provider, max(limits.values(), default=_DEFAULTS.first_heartbeat_timeout(provider)))

    def backoff_seconds(self, attempts: int) -> float:
        """The wait after the ``attempts``-th attempt ended: 2 s, 4 s, 8 s, ... up to the maximum."""
        # the exponent is capped: a task may wait out hundreds of refusals for room, and 2.0 ** 1100 overflows
        return min(self.retry_backoff_max_seconds, self.retry_backoff_seconds * 2.0 ** min(max(attempts - 1, 0), 64))


def advance(
    store: Store,
    attempt_id: str,
    attempt_state: AttemptState,
    task_state: TaskState,
    *,
    actor: str,
    reason: str | None = None,
    exit_code: int | None = None,
) -> bool:
    """Apply an outcome to the attempt and its task; False when it was already decided.

    A retryable ending (:func:`is_retryable`) asked to fail the task ends the
    attempt only: the task stays launching or running with no live attempt,
    and the scheduler's next ``follow`` re-plans it or fails it with the
    reason (it alone knows the tenant's max attempts and backoff).

    Hedged launches (docs/reliability.md, "Hedged launches"): "it runs" is
    decided by ``Store.start_running``, so only the first sibling to run
    wins; a launching sibling's success counts only if it wins that way; a
    launching sibling that fails while another sibling lives ends alone,
    and the live one decides what becomes of the task.

    One transaction (``Store.apply_outcomes``, which ``follow`` calls with a
    whole round's outcomes at once).
    """
    outcome = Outcome(
        attempt_id=attempt_id, attempt_state=attempt_state, task_state=task_state, reason=reason, exit_code=exit_code
    )
    return store.apply_outcomes([outcome], actor=actor)[0]
