"""What happens next to one attempt: the one outcome function, pure.

Four places learn how an attempt is doing: the executor's ``follow`` (a
backend status, the heartbeats, the clock), the worker's callbacks
(``complete`` / ``fail``), reconciliation (a status found later, a task left
stranded) and the failover of attempts a callback ended. Each asks
:func:`verdict` and then acts on the answer; none decides on its own.

The rules, in the order they are applied (docs/reliability.md has the
reasons):

=====================================================  ===========================================
given                                                  verdict
=====================================================  ===========================================
the task was cancelled                                 ``CANCEL`` (stop the resource, end both)
a final status ``LOST`` while the launch may still     ``FOLLOW`` ("unknown" may mean "not sent
be on its way                                          yet")
a final status ``SUCCEEDED``                           ``SUCCEED``
a final status that another attempt may fix            ``FAIL_OVER``, ended as the status says
(:func:`is_retryable`: preempted, lost, a crash)
any other final status                                 ``FAIL``, ended as the status says
an attempt that has ended already (no final status):   ``SUCCEED`` / ``FAIL_OVER`` / ``REQUEUE``
succeeded / retryable / a launch refusal or cancel /   / ``FAIL`` (the attempt keeps its ending)
anything else
a running worker silent past the heartbeat timeout     ``FAIL_OVER`` LOST, trigger ``heartbeat``,
                                                       cancel first
a pod the cloud refused a node (a spot pool out of      ``FAIL_OVER`` FAILED, trigger
capacity: ``capacity_refusal``)                        ``insufficient_capacity``, cancel first
a pod unschedulable past its limit                     ``FAIL_OVER`` FAILED, trigger
                                                       ``unschedulable``, cancel first
a worker that never called in, past its provider's     ``FAIL_OVER`` LOST, trigger
first-heartbeat limit (and not still being sent)       ``first_heartbeat``, cancel first
the backend runs a launching attempt                   ``RUN``
anything else                                          ``FOLLOW``
=====================================================  ===========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from controlplane.domain.backend import BackendState, BackendStatus, unschedulable_seconds
from controlplane.domain.exit_codes import RetryClass, retry_class
from controlplane.domain.states import AttemptState
from controlplane.domain.task import Attempt

__all__ = [
    "CAPACITY_TRIGGER",
    "FollowRules",
    "Next",
    "Verdict",
    "is_retryable",
    "never_called_in",
    "verdict",
    "worker_report",
]


#: the trigger (and reason prefix) of a pod failed over because its cloud refused capacity; the same code as
#: ``InsufficientCapacity``'s, which a refused VM launch is recorded with
CAPACITY_TRIGGER = "insufficient_capacity"


class Next(StrEnum):
    """What the caller does with the attempt (and its task)."""

    #: nothing yet: ask again next round
    FOLLOW = "follow"
    #: the backend runs a launching attempt: it (and its task) run, if the store lets it (hedged launches)
    RUN = "run"
    #: the task was cancelled: stop the backend resource, end the attempt and the task ``cancelled``
    CANCEL = "cancel"
    #: end the attempt (unless it has ended) and plan the task again, within its max attempts
    FAIL_OVER = "fail_over"
    #: the attempt and its task succeeded
    SUCCEED = "succeed"
    #: the attempt and its task failed, with the reason
    FAIL = "fail"
    #: the attempt never ran (a launch refusal, a cancelled launch): the task goes back to the queue
    REQUEUE = "requeue"


@dataclass(frozen=True, kw_only=True)
class Verdict:
    next: Next
    #: how the attempt ends; None when it has ended already or does not end now
    ended: AttemptState | None = None
    reason: str | None = None
    exit_code: int | None = None
    #: why it fails over (preempted, lost, exit_code, heartbeat, unschedulable, first_heartbeat)
    trigger: str | None = None
    #: stop the backend resource before failing over: it may still run, and a second attempt must not
    #: start beside it
    cancel_first: bool = False


class FollowRules(Protocol):
    """The thresholds :func:`verdict` holds a live attempt to (``scheduler.outcomes.FailoverRules``)."""

    @property
    def heartbeat_timeout_seconds(self) -> float: ...

    @property
    def unschedulable_timeout_seconds(self) -> float: ...

    def first_heartbeat_limit(self, provider: str) -> float: ...


#: how each final backend state ends the attempt
_ENDINGS = {
    BackendState.SUCCEEDED: AttemptState.SUCCEEDED,
    BackendState.FAILED: AttemptState.FAILED,
    BackendState.PREEMPTED: AttemptState.PREEMPTED,
    BackendState.LOST: AttemptState.LOST,
}


def is_retryable(state: AttemptState, exit_code: int | None) -> bool:
    """Whether an attempt that ended so may be followed by another attempt of its task.

    PREEMPTED (spot interruption, eviction, exit 75) and LOST (the resource
    vanished, the worker was killed: 128+N, silent heartbeats) are. FAILED is
    only for an exit code of a crash: 70 (EX_SOFTWARE) or a code the worker
    never sends on purpose (an unhandled exception), below 128. FAILED without
    an exit code (a launch refusal, an image that cannot be pulled, a
    cancel) and the terminal codes are not.
    """
    if state in (AttemptState.PREEMPTED, AttemptState.LOST):
        return True
    if state is not AttemptState.FAILED or exit_code is None:
        return False
    return retry_class(exit_code) is RetryClass.CRASH


def never_called_in(
    attempt: Attempt, *, last_heartbeat: datetime | None, rules: FollowRules, now: datetime
) -> float | None:
    """Seconds since a live attempt was launched, when its worker never called in and that is past the limit.

    The scheduler always gives the worker a callback, and the worker
    heartbeats first thing (a hedged one while it waits for its go), so
    silence from the start means the worker never ran or cannot reach the
    control plane: a VM whose bootstrap failed, an image that never
    started, a network that drops the callbacks. Its backend may still say
    "running", and would forever. ``None`` while the worker has called in
    or the limit has not passed.
    """
    if attempt.state.is_final or last_heartbeat is not None:
        return None
    age = (now - attempt.created_at).total_seconds()
    return age if age > rules.first_heartbeat_limit(attempt.provider) else None


def worker_report(*, kind: str | None, reason: str | None = None, exit_code: int | None = None) -> BackendStatus:
    """A worker's own callback as the status it reports: ``kind`` None for ``complete``, else ``fail``'s kind.

    ``preempted`` and ``temporary`` failures are PREEMPTED (another attempt
    may do better); every other kind is FAILED with the worker's exit code.
    """
    if kind is None:
        return BackendStatus(state=BackendState.SUCCEEDED, exit_code=0)
    state = BackendState.PREEMPTED if kind in ("preempted", "temporary") else BackendState.FAILED
    return BackendStatus(state=state, reason=reason, exit_code=exit_code)


def verdict(
    *,
    attempt: Attempt,
    status: BackendStatus | None,
    last_heartbeat: datetime | None,
    rules: FollowRules | None,
    now: datetime,
    task_cancelled: bool = False,
    sending: bool = False,
) -> Verdict:
    """What happens next to ``attempt`` (the table in the module docstring).

    ``status`` is the backend's (or the worker's :func:`worker_report`);
    None when nobody can say now. ``rules`` None: no timeout applies (a
    caller that only reports an outcome). ``sending``: the attempt's launch
    may still be on its way to its backend.
    """
    if task_cancelled:
        return Verdict(next=Next.CANCEL, ended=AttemptState.CANCELLED, reason="task cancelled")
    if status is not None and status.state.is_final:
        return _final(status, sending=sending)
    if attempt.state.is_final:
        return _ended(attempt)
    refused = _refused(status)
    if refused is not None:
        return refused
    timed_out = _timed_out(attempt, status, last_heartbeat, rules, now, sending=sending)
    if timed_out is not None:
        return timed_out
    if status is not None and status.state is BackendState.RUNNING and attempt.state is AttemptState.LAUNCHING:
        return Verdict(next=Next.RUN)
    return Verdict(next=Next.FOLLOW)


def _final(status: BackendStatus, *, sending: bool) -> Verdict:
    if status.state is BackendState.LOST and sending:
        return Verdict(next=Next.FOLLOW)  # "unknown attempt" may only mean its launch has not gone out yet
    ended = _ENDINGS[status.state]
    if ended is AttemptState.SUCCEEDED:
        return Verdict(next=Next.SUCCEED, ended=ended, reason=status.reason, exit_code=status.exit_code)
    if is_retryable(ended, status.exit_code):
        return Verdict(
            next=Next.FAIL_OVER,
            ended=ended,
            reason=status.reason or f"the backend reported {status.state.value}",
            exit_code=status.exit_code,
            trigger=_trigger(ended),
        )
    return Verdict(next=Next.FAIL, ended=ended, reason=status.reason, exit_code=status.exit_code)


def _ended(attempt: Attempt) -> Verdict:
    """An attempt that has ended: what its task becomes, the attempt keeping its ending."""
    state = attempt.state
    if state is AttemptState.SUCCEEDED:
        return Verdict(next=Next.SUCCEED, exit_code=attempt.exit_code)
    if is_retryable(state, attempt.exit_code):
        return Verdict(
            next=Next.FAIL_OVER,
            reason=attempt.reason or state.value,
            exit_code=attempt.exit_code,
            trigger=_trigger(state),
        )
    if state is AttemptState.CANCELLED or (state is AttemptState.FAILED and attempt.exit_code is None):
        # a launch refusal, or a cancelled launch: nothing ran, so the task is planned again
        return Verdict(
            next=Next.REQUEUE, reason=f"attempt {attempt.number} ended {state.value} and the scheduler stopped"
        )
    return Verdict(next=Next.FAIL, reason=attempt.reason or f"attempt {state.value}", exit_code=attempt.exit_code)


def _refused(status: BackendStatus | None) -> Verdict | None:
    """A pending attempt whose cloud refused it capacity: failed over now, its resource stopped first."""
    if status is None or status.state is not BackendState.PENDING or status.capacity_refusal is None:
        return None
    # the reason's prefix is what the breaker counts as a capacity error (store.offer_stats)
    return Verdict(
        next=Next.FAIL_OVER,
        ended=AttemptState.FAILED,
        trigger=CAPACITY_TRIGGER,
        reason=f"{CAPACITY_TRIGGER}: {status.capacity_refusal}",
        cancel_first=True,
    )


def _timed_out(
    attempt: Attempt,
    status: BackendStatus | None,
    last_heartbeat: datetime | None,
    rules: FollowRules | None,
    now: datetime,
    *,
    sending: bool,
) -> Verdict | None:
    """A live attempt past one of its limits: failed over once its resource is stopped; else None."""
    if rules is None:
        return None
    if attempt.state is AttemptState.RUNNING and last_heartbeat is not None:
        # only a worker that has called in is held to it; one that never did, to the first-heartbeat limit
        silent = (now - last_heartbeat).total_seconds()
        if silent > rules.heartbeat_timeout_seconds:
            return Verdict(
                next=Next.FAIL_OVER,
                ended=AttemptState.LOST,
                trigger="heartbeat",
                reason=f"no heartbeat for {silent:.0f} s (limit {rules.heartbeat_timeout_seconds:g} s)",
                cancel_first=True,
            )
    pending = unschedulable_seconds(status) if status is not None else None
    if pending is not None and pending > rules.unschedulable_timeout_seconds:
        return Verdict(
            next=Next.FAIL_OVER,
            ended=AttemptState.FAILED,
            trigger="unschedulable",
            reason=f"unschedulable for {pending} s (limit {rules.unschedulable_timeout_seconds:g} s)",
            cancel_first=True,
        )
    never = None if sending else never_called_in(attempt, last_heartbeat=last_heartbeat, rules=rules, now=now)
    if never is not None:
        limit = rules.first_heartbeat_limit(attempt.provider)
        return Verdict(
            next=Next.FAIL_OVER,
            ended=AttemptState.LOST,
            trigger="first_heartbeat",
            reason=f"no heartbeat {never:.0f} s after launch (limit {limit:g} s on {attempt.provider})",
            cancel_first=True,
        )
    return None


def _trigger(state: AttemptState) -> str:
    """The failover trigger named after how the attempt ended: preempted, lost, or a crash's exit code."""
    return {AttemptState.PREEMPTED: "preempted", AttemptState.LOST: "lost"}.get(state, "exit_code")
