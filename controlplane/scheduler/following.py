"""Following: apply what providers say about live attempts, and fail over what ended after launch.

``follow`` asks each provider about the attempts still launching or running
and acts on :func:`~controlplane.domain.verdict.verdict`; it also stops the
backend work of cancelled tasks. An attempt that ends after launch in a way
another attempt may fix (preempted, lost, silent heartbeats, unschedulable
too long, a crash) is failed over: the attempt keeps its ending, the task
goes back to ``queued`` and the next ``place_batch`` plans it again on fresh
signals and the current policy, with a new receipt, after a backoff and
within the tenant's max attempts (docs/reliability.md).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from controlplane.domain import Attempt, AttemptState, ProviderError, TaskState, Unavailable
from controlplane.domain.verdict import Next, Verdict, verdict
from controlplane.policy import Policy
from controlplane.policy_sources import PolicySet
from controlplane.scheduler.base import LAUNCH_GRACE_S, SEND_GRACE_S, SchedulerBase, log
from controlplane.scheduler.deadlines import expire_deadlines
from controlplane.scheduler.outcomes import FailoverRules, advance
from controlplane.store import Outcome, RunningStart, TaskGlance
from providers.base import BackendStatus, Provider

__all__ = ["Following"]


#: verdicts that only write to the store: a round's worth is written in one transaction
_WRITTEN_TOGETHER = frozenset({Next.RUN, Next.SUCCEED, Next.FAIL})


class Following(SchedulerBase):
    def follow(self) -> int:
        """Apply what providers say about live attempts, failing over what ended after launch; returns how many.

        First, tasks past their deadline fail and their attempts are
        stopped (:meth:`expire_deadlines`). For each live attempt: a cancelled task has its backend work
        stopped; a final backend status is applied, a retryable one
        (preempted, lost, a crash exit code) by failing over; a worker that
        called in and then went silent past the heartbeat timeout, a pod
        unschedulable past its limit, or a worker that never called in
        within its provider's first-heartbeat limit, is cancelled and only
        then failed over, so no second attempt starts while the first may still run; a
        running backend moves a launching attempt to running (of a hedged
        launch, the first sibling only: the others are cancelled). Last, the
        attempts that a worker's callback ended retryably (the API ends the
        attempt only) get their failover: last, so that one ended after the
        live attempts were read is still caught in this round.
        """
        expired = self.expire_deadlines()  # first: an expired task's attempts are not followed, nor failed over
        policies = self.policy()
        # one read: the live attempts, when each last called in, and their tasks' state and tenant
        view = self.store.follow_view()
        by_provider: dict[str, list[Attempt]] = {}
        for attempt in view.attempts:
            if attempt.provider in self.providers:
                by_provider.setdefault(attempt.provider, []).append(attempt)
        # each tenant's failover rules, worked out once a round (not once per live attempt)
        rules = functools.cache(lambda tenant: FailoverRules.of(policies.for_tenant(tenant)))

        def one(name: str) -> tuple[int, list[tuple[Attempt, Verdict]]]:
            return self._follow_provider(self.providers[name], by_provider[name], view.tasks, view.heartbeats, rules)

        if len(by_provider) <= 1 or not self.follow_in_parallel:
            followed = [one(name) for name in sorted(by_provider)]
        else:
            # one thread per backend: a cloud API that times out holds up only its own attempts
            with ThreadPoolExecutor(max_workers=len(by_provider), thread_name_prefix="follow") as pool:
                followed = list(pool.map(one, sorted(by_provider)))
        applied = sum(acted for acted, _ in followed)
        # what only writes to the store, of every backend: one transaction for the round
        applied += self._start_and_settle([item for _, together in followed for item in together])
        return expired + applied + self._fail_over_ended(policies)

    def expire_deadlines(self) -> int:
        """Fail queued, launching and running tasks past their deadline, stopping their attempts (deadlines.py)."""

        def retry_release(attempt: Attempt) -> None:
            self._release_retries[attempt.id] = attempt.provider

        return expire_deadlines(
            store=self.store,
            providers=self.providers,
            now=self.clock(),
            actor=self.scheduler_id,
            retry_release=retry_release,
        )

    def _follow_provider(
        self,
        provider: Provider,
        live: list[Attempt],
        tasks: Mapping[str, TaskGlance],
        heartbeats: Mapping[str, datetime | None],
        rules_of: Callable[[str], FailoverRules],
    ) -> tuple[int, list[tuple[Attempt, Verdict]]]:
        """``follow`` for one backend's live attempts, in order; stops at the first status it cannot get.

        The statuses are asked first, then acted on. What needs a backend
        call too (a cancel, a failover) is done here one by one, as is every
        attempt of a task with more than one live attempt on this backend (a
        hedge's siblings keep their order); how many changed, and the
        attempts that only start running or end (``RUN``, ``SUCCEED``,
        ``FAIL``), which ``follow`` writes for every backend at once
        (``Store.start_and_settle``).
        """
        decided: list[tuple[Attempt, Verdict, FailoverRules]] = []
        for attempt in live:
            task = tasks[attempt.task_id]
            cancelled = task.state == TaskState.CANCELLED
            status: BackendStatus | None = None
            if not cancelled:
                try:
                    status = provider.status(attempt.id)
                except Unavailable:
                    # the backend API is down or timing out: asking about its other attempts this round would
                    # cost one timeout each, and a cancel (for a silent worker) would not go through either
                    log.warning("", extra={"event": "follow.backend_unavailable", "provider": attempt.provider})
                    break
                except ProviderError:
                    status = None  # the backend cannot say now; a silent worker is still given up below
            rules = rules_of(task.tenant)
            verdict_now = verdict(
                attempt=attempt,
                status=status,
                last_heartbeat=heartbeats.get(attempt.id),
                rules=rules,
                now=self.clock(),
                task_cancelled=cancelled,
                sending=self.may_still_be_sending(attempt),
            )
            decided.append((attempt, verdict_now, rules))
        per_task = Counter(attempt.task_id for attempt in live)
        applied = 0
        together: list[tuple[Attempt, Verdict]] = []
        for attempt, verdict_now, rules in decided:
            if verdict_now.next in _WRITTEN_TOGETHER and per_task[attempt.task_id] == 1:
                together.append((attempt, verdict_now))
            else:
                applied += self._act(provider, attempt, verdict_now, rules)
        return applied, together

    def _start_and_settle(self, decided: list[tuple[Attempt, Verdict]]) -> int:
        """Attempts that start running, then attempts that end, in one transaction; how many ended."""
        starting = [attempt for attempt, verdict_now in decided if verdict_now.next is Next.RUN]
        ending: list[tuple[Attempt, AttemptState]] = []
        outcomes: list[Outcome] = []
        for attempt, verdict_now in decided:
            if verdict_now.next not in (Next.SUCCEED, Next.FAIL) or verdict_now.ended is None:
                continue
            ending.append((attempt, verdict_now.ended))
            outcomes.append(
                Outcome(
                    attempt_id=attempt.id,
                    attempt_state=verdict_now.ended,
                    task_state=TaskState.SUCCEEDED if verdict_now.next is Next.SUCCEED else TaskState.FAILED,
                    reason=verdict_now.reason,
                    exit_code=verdict_now.exit_code,
                )
            )
        if not starting and not outcomes:
            return 0
        started, done = self.store.start_and_settle(
            [attempt.id for attempt in starting], outcomes, actor=self.scheduler_id
        )
        self._stop_losers(starting, started)
        for (attempt, ended_as), ended in zip(ending, done, strict=True):
            if ended and self.metrics:
                self.metrics.attempt_ended(provider=attempt.provider, target=attempt.target, outcome=ended_as.value)
        return sum(done)

    def _act(self, provider: Provider, attempt: Attempt, decided: Verdict, rules: FailoverRules) -> int:
        """Do what the verdict on a live attempt says; 1 when it changed something."""
        if decided.next is Next.CANCEL:
            try:
                provider.cancel(attempt.id)
            except ProviderError:
                return 0  # try again next round
            return int(
                advance(
                    self.store,
                    attempt.id,
                    AttemptState.CANCELLED,
                    TaskState.CANCELLED,
                    actor=self.scheduler_id,
                    reason=decided.reason,
                )
            )
        if decided.next is Next.RUN:
            self._start_running([attempt])
            return 0
        if decided.next is Next.FAIL_OVER and decided.cancel_first:
            assert decided.ended is not None
            assert decided.trigger is not None
            assert decided.reason is not None
            return self._cancel_then_fail_over(
                provider, attempt, rules, ended=decided.ended, trigger=decided.trigger, reason=decided.reason
            )
        return self._settle(attempt, decided, rules)

    def _start_running(self, attempts: list[Attempt]) -> None:
        """The backend says these launching attempts run: the store decides whether each may (a hedge's first only).

        One transaction for all of them. The resources of the siblings an
        attempt beat, or its own when it lost, are stopped now;
        ``release_finished`` repeats that if a cancel fails.
        """
        if attempts:
            answers = self.store.start_running_many([a.id for a in attempts], actor=self.scheduler_id)
            self._stop_losers(attempts, answers)

    def _stop_losers(self, attempts: list[Attempt], answers: list[RunningStart]) -> None:
        """Stop the resources of the siblings each started attempt beat, or its own when it lost."""
        for attempt, started in zip(attempts, answers, strict=True):
            losers = [*started.cancelled, *([started.attempt] if started.outcome == "lost" else [])]
            for loser in losers:
                self._stop_resource(loser.id, loser.provider)
            if losers:
                log.info(
                    "",
                    extra={
                        "event": "attempt.hedge_decided",
                        "task_id": attempt.task_id,
                        "attempt_id": attempt.id,
                        "outcome": started.outcome,
                        "cancelled": [loser.id for loser in losers],
                    },
                )

    def may_still_be_sending(self, attempt: Attempt) -> bool:
        """Whether a launching attempt with no backend ref may have a launch call still on its way.

        Its backend answering "unknown attempt" then means "not sent yet",
        not "gone". True while this scheduler is sending it; for an attempt
        created before this scheduler was elected, for ``SEND_GRACE_S``
        after the election (the previous leader checks the fence before
        every launch, so only a call already under way can still arrive,
        bounded by the providers' client timeouts); one created and sent
        under this leadership has had its answer. Without leadership
        (schedulers sharing the work, in tests) it goes by the attempt's age.
        """
        if attempt.state != AttemptState.LAUNCHING or attempt.backend_ref is not None:
            return False
        if attempt.id in self._sending:
            return True
        now = self.clock()
        if self.leading_since is None:
            return (now - attempt.created_at).total_seconds() < LAUNCH_GRACE_S
        if attempt.created_at <= self.leading_since:
            return (now - self.leading_since).total_seconds() < SEND_GRACE_S
        return False

    def apply_final_status(self, attempt: Attempt, status: BackendStatus, rules: FailoverRules) -> int:
        """Apply a final backend status found outside ``follow`` (reconciliation); 1 if it changed something."""
        decided = verdict(
            attempt=attempt,
            status=status,
            last_heartbeat=None,
            rules=None,  # only the status speaks here: no timeout is judged outside follow
            now=self.clock(),
            sending=self.may_still_be_sending(attempt),
        )
        return self._settle(attempt, decided, rules)

    def _settle(self, attempt: Attempt, decided: Verdict, rules: FailoverRules) -> int:
        """A verdict from a final status: fail over a retryable ending, else end the attempt and its task."""
        if decided.next is Next.FAIL_OVER:
            assert decided.trigger is not None
            assert decided.reason is not None
            return self._fail_over(
                attempt,
                rules,
                ended=decided.ended,
                trigger=decided.trigger,
                reason=decided.reason,
                exit_code=decided.exit_code,
            )
        if decided.next not in (Next.SUCCEED, Next.FAIL) or decided.ended is None:
            return 0
        done = advance(
            self.store,
            attempt.id,
            decided.ended,
            TaskState.SUCCEEDED if decided.next is Next.SUCCEED else TaskState.FAILED,
            actor=self.scheduler_id,
            reason=decided.reason,
            exit_code=decided.exit_code,
        )
        if done and self.metrics:
            self.metrics.attempt_ended(provider=attempt.provider, target=attempt.target, outcome=decided.ended.value)
        return int(done)

    def _cancel_then_fail_over(
        self,
        provider: Provider,
        attempt: Attempt,
        rules: FailoverRules,
        *,
        ended: AttemptState,
        trigger: str,
        reason: str,
    ) -> int:
        """Stop the attempt's backend resource, then fail over; nothing if the cancel did not go through."""
        try:
            provider.cancel(attempt.id)
        except (ProviderError, Unavailable) as exc:
            # a second attempt while this one may still run would be a duplicate launch: try next round
            log.warning(
                "",
                extra={
                    "event": "attempt.cancel_failed",
                    "task_id": attempt.task_id,
                    "attempt_id": attempt.id,
                    "trigger": trigger,
                    "error": str(exc),
                },
            )
            return 0
        return self._fail_over(attempt, rules, ended=ended, trigger=trigger, reason=reason)

    def _fail_over_ended(self, policies: Policy | PolicySet) -> int:
        """Fail over the attempts that a worker's callback ended retryably (the API ends only the attempt)."""
        applied = 0
        for attempt in self.store.attempts_awaiting_failover():
            decided = verdict(attempt=attempt, status=None, last_heartbeat=None, rules=None, now=self.clock())
            if decided.next is not Next.FAIL_OVER or decided.trigger is None or decided.reason is None:
                continue
            task = self.store.get_task(attempt.task_id)
            applied += self._fail_over(
                attempt,
                FailoverRules.of(policies.for_tenant(task.spec.tenant)),
                ended=None,
                trigger=decided.trigger,
                reason=decided.reason,
            )
        return applied
