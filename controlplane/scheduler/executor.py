"""Placing tasks and following attempts: the scheduler's two jobs.

``place_batch`` claims queued tasks (atomically: two schedulers never take
the same task), plans each with the pure ``plan()``, stores the receipt,
then walks the plan: one attempt per candidate until a provider accepts the
launch. A launch error moves on to the next candidate and is recorded on
the attempt; a terminal one (``InvalidSpec``) stops there. A hedged plan
launches its hedge group at once, one attempt per candidate; the first to
run wins and the others are cancelled (docs/reliability.md, "Hedged
launches").

``follow`` asks each provider about the attempts still launching or running
and applies what it says; it also stops the backend work of cancelled tasks.
An attempt that ends after launch in a way another attempt may fix
(preempted, lost, silent heartbeats, unschedulable too long, a crash) is
failed over: the attempt keeps its ending, the task goes back to ``queued``
and the next ``place_batch`` plans it again on fresh signals and the current
policy, with a new receipt, after a backoff and within the tenant's max
attempts (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from controlplane.domain import (
    Attempt,
    AttemptState,
    Candidate,
    DataSensitivity,
    InvalidTransition,
    PlacementPlan,
    ProviderError,
    SignalSample,
    SignalSnapshot,
    Task,
    TaskState,
    Unavailable,
    spot_price_key,
)
from controlplane.domain.backend import unschedulable_seconds
from controlplane.domain.tenant_storage import TenantStorage
from controlplane.metrics import Metrics
from controlplane.policy import CAPACITY_SOURCE, Policy, plan
from controlplane.policy_sources import PolicySet
from controlplane.scheduler.deadlines import expire_deadlines
from controlplane.scheduler.outcomes import FailoverRules, advance, is_retryable, never_called_in
from controlplane.scheduler.queueing import NoLaunch, max_queue_seconds, no_launch, overdue
from controlplane.scheduler.workerspec import render_worker_spec
from controlplane.signals.snapshot_json import snapshot_to_json
from controlplane.store import PlannedLaunch, StateMismatch, Store, backing_off, utcnow, wake_waiting
from providers.base import BackendState, BackendStatus, LaunchRequest, Provider

__all__ = ["Planner", "Scheduler", "unschedulable_seconds"]

Planner = Callable[[Task, SignalSnapshot, Policy, datetime], PlacementPlan]

log = logging.getLogger("fusionplane.scheduler")

CAPACITY_TTL_S = 30.0
#: a probe chosen less than this long ago counts as in flight even before its attempt row is read back
PROBE_LAUNCH_S = 10.0
_OUTCOMES = {
    BackendState.SUCCEEDED: (AttemptState.SUCCEEDED, TaskState.SUCCEEDED),
    BackendState.FAILED: (AttemptState.FAILED, TaskState.FAILED),
    # retryable endings are failed over instead of failing the task (follow -> _fail_over)
    BackendState.PREEMPTED: (AttemptState.PREEMPTED, TaskState.FAILED),
    BackendState.LOST: (AttemptState.LOST, TaskState.FAILED),
}
#: an attempt reported LOST before its launch was recorded may simply not be launched yet (place_batch
#: records the batch's backend refs after its last launch, while follow runs in another thread); without
#: leadership (several schedulers sharing the work), only after this long is it a launch that never happened
LAUNCH_GRACE_S = 300.0
#: with leadership: how long after an election a launch the previous leader had under way may still
#: arrive at a backend (longer than any provider's client timeouts for one launch call, retries included)
SEND_GRACE_S = 60.0
#: how old a passed fence check may be before the next launch checks again
FENCE_CHECK_S = 1.0


def _attempt_token() -> tuple[str, str]:
    """A new attempt's callback token and its sha256 (only the hash is stored)."""
    token = "att_" + secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


class Scheduler:
    def __init__(
        self,
        *,
        store: Store,
        policy: Callable[[], Policy | PolicySet],
        providers: Mapping[str, Provider],
        callback_base: str,
        checkpoint_root: Path | str | None,
        scheduler_id: str,
        metrics: Metrics | None = None,
        batch_size: int = 64,
        clock: Callable[[], datetime] = utcnow,
        planner: Planner = plan,
        signals: Callable[[], Mapping[str, SignalSample]] | None = None,
        storage: TenantStorage | None = None,
        grants: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> None:
        self.store, self.policy, self.providers = store, policy, providers
        #: the tenant folders every local path of a task must be in, checked before each launch (None: unchecked)
        self.storage = storage
        self.callback_base, self.checkpoint_root = callback_base, checkpoint_root
        self.scheduler_id, self.metrics, self.batch_size, self.clock = scheduler_id, metrics, batch_size, clock
        #: the pure ``plan()``; tests hand in a faulty one to prove the executor's own checks
        self.planner = planner
        #: the poll hub's latest values (Prometheus, spot prices, cluster capacity, queue depth)
        self.signals = signals
        #: a tenant's worker-spec ``access`` and ``fetch`` blocks (None: the worker's defaults, no s3)
        self.grants = grants
        #: the last event whose finished attempt had its backend resource released
        self._release_cursor: int | None = None
        #: attempts whose launch this scheduler is sending (rows written, backend refs not yet recorded)
        self._sending: set[str] = set()
        #: when this scheduler was elected leader (None: it runs without the lease, e.g. in tests)
        self.leading_since: datetime | None = None
        #: attempt id -> provider: releases whose cancel failed, tried again each round
        self._release_retries: dict[str, str] = {}
        #: half-open breaker key -> (the task sent as its probe, when): one probe in flight per breaker
        self._probes: dict[str, tuple[str, float]] = {}
        self.probe_launch_s = PROBE_LAUNCH_S

    # -- signals ---------------------------------------------------------------
    def snapshot(self, policy: Policy | PolicySet) -> SignalSnapshot:
        """The hub's latest values, with the free capacity of providers configured here asked for now.

        A provider's own answer is newer than any poll, so it wins over the
        hub's value for the same target.
        """
        now = self.clock()
        samples: dict[str, SignalSample] = dict(self.signals()) if self.signals is not None else {}
        for target in policy.targets:
            provider = self.providers.get(target.provider)
            if provider is None:
                continue
            try:
                free = provider.capacity(target).free
            except ProviderError:
                continue  # no sample: the planner treats it as missing, never as a reason
            if free is not None:
                key = f"{CAPACITY_SOURCE}/{target.name}"
                samples[key] = SignalSample(
                    source=CAPACITY_SOURCE,
                    key=target.name,
                    value=float(free),
                    observed_at=now,
                    ttl_seconds=CAPACITY_TTL_S,
                )
        return SignalSnapshot(taken_at=now, samples=samples)

    # -- placing ---------------------------------------------------------------
    def place_batch(self) -> int:
        """Claim, plan and launch up to ``batch_size`` queued tasks; returns how many were claimed.

        The hot path writes twice per batch, not per task: one transaction
        stores every receipt with its first attempt (or the task's failure),
        then the launches go out, then one transaction records the backend
        handles. Each attempt row exists before its launch is sent, and
        providers key launches by attempt id, so a crash in between is
        adopted, never launched twice. A launch error falls back to the
        per-task path for the remaining candidates.

        A hedged plan (its first usable candidates share a hedge group, two
        or more of them) starts one attempt per candidate of the group in
        that same transaction, and all of them are launched; the first to
        run wins (``Store.start_running``) and the others are cancelled.
        Only when every one of them is refused does the task walk the rest
        of its plan.

        A task with nothing to launch now waits in ``queued`` with its
        reason, or fails when nothing could ever place it or its wait is
        over (:func:`~controlplane.scheduler.queueing.no_launch`). Each
        launch of the batch takes a slot from the snapshot's free capacity
        for the tasks planned after it, so a burst waits for capacity
        instead of being refused launch after launch; and free capacity
        wakes that many waiting tasks before the claim.
        """
        self._wake_waiting()
        tasks = self.store.claim_queued(batch_size=self.batch_size, scheduler_id=self.scheduler_id)
        if not tasks:
            return 0
        # one policy set and one snapshot per batch: every receipt of the batch saw the same world
        policies = self.policy()
        snapshot = self.snapshot(policies)
        seen = snapshot  # less each slot the batch takes
        launches: list[PlannedLaunch] = []
        tokens: list[list[str]] = []
        rests: list[tuple[list[Candidate], list[str]]] = []
        for task in tasks:
            started = time.perf_counter()
            policy = policies.for_tenant(task.spec.tenant)
            now = self.clock()
            decision = self.planner(task, seen, policy, now)
            if self.metrics:
                self.metrics.plan_seconds.observe(time.perf_counter() - started)
            history: list[str] = []
            late = overdue(task=task, now=now)
            usable = (
                [] if late else self._gate_probes(self._usable(task, decision.candidates, history, policy), history)
            )
            group = _launched_together(usable)
            self._register_probes(task.id, group)
            seen = _taken(seen, group)
            issued = [_attempt_token() for _ in group]
            nothing = (
                NoLaunch(failure=late)
                if late
                else None
                if group
                else no_launch(
                    task=task,
                    decision=decision,
                    history=history,
                    now=now,
                    max_queue_s=max_queue_seconds(policy),
                )
            )
            launches.append(
                PlannedLaunch(
                    plan=decision,
                    candidate=group[0] if group else None,
                    token_sha256=issued[0][1] if issued else None,
                    failure=nothing.failure if nothing else None,
                    wait=nothing.wait if nothing else None,
                    not_before=nothing.not_before if nothing else None,
                    hedged=tuple(group[1:]),
                    hedged_token_sha256=tuple(sha256 for _, sha256 in issued[1:]),
                )
            )
            tokens.append([token for token, _ in issued])
            rests.append((usable[len(group) :], history))
        # the batch's snapshot is stored with its receipts: `policy simulate` replays them on it
        groups = self.store.start_launch_groups(
            launches, actor=self.scheduler_id, snapshot=(snapshot.taken_at, snapshot_to_json(snapshot))
        )
        sending = [attempt.id for attempts in groups for attempt in attempts]
        self._sending.update(sending)  # until their refs are recorded: "unknown" to a backend means "not sent yet"
        try:
            launched: dict[str, str] = {}
            for task, launch, group_tokens, attempts, (rest, history) in zip(
                tasks, launches, tokens, groups, rests, strict=True
            ):
                if not attempts or launch.candidate is None:
                    continue  # failed with its reason, or cancelled meanwhile
                members = list(zip(attempts, [launch.candidate, *launch.hedged], group_tokens, strict=True))
                refs, refusals = self._send_group(task, members, history)
                launched.update(refs)
                if len(refusals) < len(members):
                    continue  # launched (a hedged launch: at least one of its siblings), or cancelled meanwhile
                if all(refusal.retryable for refusal in refusals):
                    self._launch(task, rest, history, last=attempts[-1])
                else:  # terminal (InvalidSpec), and no sibling launched
                    self._fail_task(task.id, "launch refused: " + "; ".join(history))
            self.store.record_backend_refs(launched)
        finally:
            self._sending.difference_update(sending)
        return len(tasks)

    def place_until_idle(self, *, max_seconds: float) -> int:
        """Place batch after batch while full batches come back, for at most about ``max_seconds``.

        The serve loop calls this on an interval, so a burst of submissions
        drains at the store's pace instead of one batch per tick.
        """
        deadline = time.monotonic() + max_seconds
        placed = 0
        while True:
            claimed = self.place_batch()
            placed += claimed
            if claimed < self.batch_size or time.monotonic() >= deadline:
                return placed

    def _usable(
        self, task: Task, candidates: tuple[Candidate, ...], history: list[str], policy: Policy
    ) -> list[Candidate]:
        """The candidates this scheduler may launch, in plan order; refusals go to ``history``."""
        usable = []
        for candidate in candidates:
            if task.spec.data_sensitivity == DataSensitivity.PRIVATE and not self._private_target(candidate, policy):
                # plan() never offers this; refusing here too means a planner bug cannot leak private
                # data, on the first plan and on every re-plan after a failover alike
                history.append(f"{candidate.target}: refused, private data on a non-private target")
                log.error("", extra={"event": "private_data_refused", "task_id": task.id, "target": candidate.target})
            elif candidate.provider not in self.providers:
                history.append(f"{candidate.target}: provider {candidate.provider} is not configured")
            else:
                usable.append(candidate)
        return usable

    def _gate_probes(self, usable: list[Candidate], history: list[str]) -> list[Candidate]:
        """Leave out candidates that would probe a half-open breaker whose probe is still in flight.

        A half-open breaker means "try one launch and see": sending every
        task there until the breaker poller sees the probe's outcome would
        be the stampede the breaker exists to stop. A task with another
        candidate goes there instead; a task whose every candidate is
        gated still launches (a second probe rather than a task that waits
        on a poll interval).
        """
        gated = [c for c in usable if c.breaker_probe is not None and self._probe_in_flight(c.breaker_probe)]
        if not gated or len(gated) == len(usable):
            return usable
        for candidate in gated:
            history.append(
                f"{candidate.target}: circuit breaker {candidate.breaker_probe} half-open, its probe is in flight"
            )
        return [c for c in usable if c not in gated]

    def _register_probes(self, task_id: str, chosen: list[Candidate]) -> None:
        for candidate in chosen:
            if candidate.breaker_probe is not None:
                self._probes[candidate.breaker_probe] = (task_id, time.monotonic())

    def _probe_in_flight(self, key: str) -> bool:
        """Whether the probe sent to breaker ``key`` is still launching or running (or was sent moments ago)."""
        entry = self._probes.get(key)
        if entry is None:
            return False
        task_id, since = entry
        if time.monotonic() - since < self.probe_launch_s:
            return True  # chosen in this or a recent batch; its attempt row may not be visible yet
        for attempt in self.store.attempts_for(task_id):
            if (
                not attempt.state.is_final
                and spot_price_key(attempt.provider, attempt.region, attempt.instance_type) == key
            ):
                return True
        del self._probes[key]
        return False

    @staticmethod
    def _private_target(candidate: Candidate, policy: Policy) -> bool:
        """Both the candidate and the policy's own target of that name say private.

        The candidate's flag is the planner's copy; the policy's target is
        the operator's word. A name the policy does not know is not private.
        """
        target = policy.target(candidate.target)
        return candidate.private and target is not None and target.private

    def _wake_waiting(self) -> None:
        """Free capacity and waiting tasks backing off: make that many of them claimable now.

        A slot freed by an ending attempt is used within a round instead of
        after the waiters' backoff. Bounded by the free slots seen, so
        tasks waiting for something else cost at most that many plans a
        round. One cheap read when nothing waits.
        """
        if not backing_off(self.store):
            return
        snapshot = self.snapshot(self.policy())
        free = sum(
            int(sample.value)
            for key, sample in snapshot.samples.items()
            if key.startswith(f"{CAPACITY_SOURCE}/") and not sample.is_stale(snapshot.taken_at) and sample.value > 0
        )
        if free:
            wake_waiting(self.store, limit=free)

    def _send_group(
        self, task: Task, members: list[tuple[Attempt, Candidate, str]], history: list[str]
    ) -> tuple[dict[str, str], list[ProviderError]]:
        """Launch one attempt, or every sibling of a hedged launch: their backend refs, and the refusals.

        A sibling that ended before its turn (another one already won) is
        not sent at all. After the sends, a sibling that lost while the
        launches went out has its resource stopped at once: its cancel in
        ``release_finished`` may have come before the resource existed. A
        task whose first sibling was refused is retargeted to the first one
        that launched.
        """
        refs: dict[str, str] = {}
        refusals: list[ProviderError] = []
        hedged = len(members) > 1
        for index, (attempt, candidate, token) in enumerate(members):
            if index > 0 and self.store.get_attempt(attempt.id).state.is_final:
                continue
            sent = self._send(task, candidate, attempt.id, token, history, hedged=hedged)
            if isinstance(sent, str):
                refs[attempt.id] = sent
            else:
                refusals.append(sent)
        if hedged and refs:
            for attempt in self.store.attempts_for(task.id):
                if attempt.id in refs and attempt.state == AttemptState.CANCELLED:
                    self._stop_resource(attempt.id, attempt.provider)
            if members[0][0].id not in refs:
                # the task named the first sibling's target, which refused: name one that launched instead
                target = next(candidate.target for attempt, candidate, _ in members if attempt.id in refs)
                self.store.retarget_task(task.id, target=target, actor=self.scheduler_id)
        return refs, refusals

    def _send(
        self, task: Task, candidate: Candidate, attempt_id: str, token: str, history: list[str], *, hedged: bool = False
    ) -> str | ProviderError:
        """Launch one attempt: its backend ref, or the provider's refusal (recorded on the attempt)."""
        provider = self.providers[candidate.provider]
        # a leader deposed since its last write stops here, before the launch leaves this process (checked
        # at most once a second: a takeover waits out a whole lease, and the new leader gives launches
        # already under way SEND_GRACE_S)
        self.store.check_fence(max_age_s=FENCE_CHECK_S)
        started = time.perf_counter()
        try:
            spec = render_worker_spec(
                task=task,
                attempt_id=attempt_id,
                token=token,
                callback_base=self.callback_base,
                checkpoint_root=self.checkpoint_root,
                hedged=hedged,
                storage=self.storage,
                grant=self.grants(task.spec.tenant) if self.grants is not None else None,
            )
            result = provider.launch(
                LaunchRequest(
                    attempt_id=attempt_id,
                    task_id=task.id,
                    candidate=candidate,
                    worker_spec=spec,
                    deadline_seconds=task.spec.deadline_seconds,
                )
            )
        except ProviderError as exc:
            history.append(f"{candidate.target}: {exc.code}: {exc.message}")
            self.store.transition_attempt(
                attempt_id, wanted=AttemptState.FAILED, actor=self.scheduler_id, reason=f"{exc.code}: {exc.message}"
            )
            log.warning(
                "",
                extra={
                    "event": "launch_failed",
                    "task_id": task.id,
                    "attempt_id": attempt_id,
                    "target": candidate.target,
                    "code": exc.code,
                },
            )
            return exc
        if self.metrics:
            self.metrics.launch_seconds.labels(provider=candidate.provider).observe(time.perf_counter() - started)
        log.info(
            "",
            extra={
                "event": "launched",
                "task_id": task.id,
                "attempt_id": attempt_id,
                "target": candidate.target,
                "adopted": result.adopted,
            },
        )
        return result.backend_ref

    def _launch(self, task: Task, candidates: list[Candidate], history: list[str], *, last: Attempt) -> None:
        """The per-task path after a launch error: one attempt per remaining candidate.

        When every candidate refused for a reason that passes (capacity,
        throttling, an API that timed out), the task is planned again later
        (:meth:`_retry_later`) rather than failed; a terminal refusal
        (``InvalidSpec``) fails it. ``last`` is the attempt refused before.
        """
        for candidate in candidates:
            token, token_sha256 = _attempt_token()
            attempt = self.store.create_attempt(
                task_id=task.id,
                target=candidate.target,
                provider=candidate.provider,
                token_sha256=token_sha256,
                region=candidate.region,
                instance_type=candidate.instance_type,
                actor=self.scheduler_id,
            )
            current = self.store.get_task(task.id)
            if current.state == TaskState.CANCELLED:
                self.store.transition_attempt(
                    attempt.id,
                    wanted=AttemptState.CANCELLED,
                    actor=self.scheduler_id,
                    reason="task cancelled before launch",
                )
                return
            if current.state == TaskState.LAUNCHING:
                # failover: the task stays launching, but now on this candidate's target
                self.store.retarget_task(task.id, target=candidate.target, actor=self.scheduler_id)
            else:
                with contextlib.suppress(InvalidTransition, StateMismatch):
                    self.store.transition_task(
                        task.id, wanted=TaskState.LAUNCHING, actor=self.scheduler_id, target=candidate.target
                    )
            last = attempt
            self._sending.add(attempt.id)
            try:
                sent = self._send(task, candidate, attempt.id, token, history)
                if isinstance(sent, str):
                    self.store.set_backend_ref(attempt.id, backend_ref=sent)
                    return
            finally:
                self._sending.discard(attempt.id)
            if not sent.retryable:
                self._fail_task(task.id, "every candidate failed to launch: " + "; ".join(history))
                return
        self._retry_later(task, last, history)

    def _retry_later(self, task: Task, last: Attempt, history: list[str]) -> None:
        """Every candidate refused, each for a reason that passes: plan the task again after a backoff.

        A cluster API that timed out for a few seconds, or a capacity
        error on every offer, must not fail the task for good. It goes
        back to ``queued`` through the same failover as an attempt that
        ended after launch (trigger ``launch_refused``: backoff, a new plan
        on fresh signals, a new receipt), so it counts against the tenant's
        max attempts and fails with the refusals once they are used up. A
        resource a timed-out launch may still have created belongs to an
        ended attempt, which ``release_finished`` deletes.
        """
        self._fail_over(
            last,
            FailoverRules.of(self.policy().for_tenant(task.spec.tenant)),
            ended=None,
            trigger="launch_refused",
            reason="every candidate refused the launch: " + "; ".join(history),
            retryable=lambda _state, _code: True,  # the refusals were checked: each one passes
        )

    def _fail_task(self, task_id: str, reason: str) -> None:
        with contextlib.suppress(InvalidTransition, StateMismatch):  # cancelled meanwhile
            self.store.transition_task(task_id, wanted=TaskState.FAILED, actor=self.scheduler_id, reason=reason)

    # -- following -------------------------------------------------------------
    def release_finished(self) -> int:
        """Delete the backend resources of attempts that ended since the last call; returns how many.

        An attempt usually ends by its worker's callback, which the API
        records without touching the backend. Left alone, the resource may
        go on costing money: an Azure VM that powered itself off stays
        allocated and billed, a Kubernetes pod stuck pulling its image holds
        its GPU. ``cancel`` of something already gone is success, so this is
        safe to repeat. The cursor starts at the newest event when the
        scheduler starts; resources of attempts that ended before are
        reconciliation's job (``list_owned``). The local provider keeps its
        attempt directories (logs), so it is skipped.
        """
        if self._release_cursor is None:
            self._release_cursor = self.store.last_event_id()
            return 0
        released = 0
        # cancels that failed before, first; a provider that fails once is not asked again this round
        failing: set[str] = set()
        for attempt_id, provider_name in list(self._release_retries.items()):
            if provider_name in failing:
                continue
            if self._stop_resource(attempt_id, provider_name):
                del self._release_retries[attempt_id]
                released += 1
            else:
                failing.add(provider_name)
        for finished in self.store.finished_attempts_after(self._release_cursor):
            provider = self.providers.get(finished.provider)
            # a cancelled attempt (a hedge's loser) may still run wherever it is, the local provider included
            if provider is not None and (finished.provider != "local" or finished.state == AttemptState.CANCELLED):
                if finished.provider in failing or not self._stop_resource(finished.attempt_id, finished.provider):
                    # kept for the next round; attempts on other providers are not held up behind it
                    failing.add(finished.provider)
                    self._release_retries[finished.attempt_id] = finished.provider
                else:
                    released += 1
            self._release_cursor = finished.event_id
        return released

    def _stop_resource(self, attempt_id: str, provider_name: str) -> bool:
        """Cancel an attempt's backend resource (gone already is fine); False, logged, when the cancel failed."""
        provider = self.providers.get(provider_name)
        if provider is None:
            return True
        try:
            provider.cancel(attempt_id)
        except (ProviderError, Unavailable) as exc:
            log.warning("", extra={"event": "attempt.release_failed", "attempt_id": attempt_id, "error": str(exc)})
            return False
        return True

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
        live = self.store.live_attempts()
        heartbeats = self.store.last_heartbeats([a.id for a in live]) if live else {}
        by_provider: dict[str, list[Attempt]] = {}
        for attempt in live:
            if attempt.provider in self.providers:
                by_provider.setdefault(attempt.provider, []).append(attempt)

        def one(name: str) -> int:
            return self._follow_provider(self.providers[name], by_provider[name], heartbeats, policies)

        if len(by_provider) <= 1:
            applied = sum(one(name) for name in by_provider)
        else:
            # one thread per backend: a cloud API that times out holds up only its own attempts
            with ThreadPoolExecutor(max_workers=len(by_provider), thread_name_prefix="follow") as pool:
                applied = sum(pool.map(one, list(by_provider)))
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
        heartbeats: Mapping[str, datetime | None],
        policies: Policy | PolicySet,
    ) -> int:
        """``follow`` for one backend's live attempts, in order; stops at the first status it cannot get."""
        applied = 0
        for attempt in live:
            task = self.store.get_task(attempt.task_id)
            if task.state == TaskState.CANCELLED:
                try:
                    provider.cancel(attempt.id)
                except ProviderError:
                    continue  # try again next round
                applied += advance(
                    self.store,
                    attempt.id,
                    AttemptState.CANCELLED,
                    TaskState.CANCELLED,
                    actor=self.scheduler_id,
                    reason="task cancelled",
                )
                continue
            rules = FailoverRules.of(policies.for_tenant(task.spec.tenant))
            status: BackendStatus | None
            try:
                status = provider.status(attempt.id)
            except Unavailable:
                # the backend API is down or timing out: asking about its other attempts this round would
                # cost one timeout each, and a cancel (for a silent worker) would not go through either
                log.warning("", extra={"event": "follow.backend_unavailable", "provider": attempt.provider})
                break
            except ProviderError:
                status = None  # the backend cannot say now; a silent worker is still given up below
            if status is not None and status.state.is_final:
                applied += self._apply(attempt, status, rules)
                continue
            silent = self._silent_seconds(attempt, heartbeats.get(attempt.id), rules)
            pending = unschedulable_seconds(status) if status is not None else None
            if silent is not None:
                applied += self._cancel_then_fail_over(
                    provider,
                    attempt,
                    rules,
                    ended=AttemptState.LOST,
                    trigger="heartbeat",
                    reason=f"no heartbeat for {silent:.0f} s (limit {rules.heartbeat_timeout_seconds:g} s)",
                )
            elif pending is not None and pending > rules.unschedulable_timeout_seconds:
                applied += self._cancel_then_fail_over(
                    provider,
                    attempt,
                    rules,
                    ended=AttemptState.FAILED,
                    trigger="unschedulable",
                    reason=f"unschedulable for {pending} s (limit {rules.unschedulable_timeout_seconds:g} s)",
                )
            elif (never := self._never_called_in(attempt, heartbeats.get(attempt.id), rules)) is not None:
                limit = rules.first_heartbeat_limit(attempt.provider)
                applied += self._cancel_then_fail_over(
                    provider,
                    attempt,
                    rules,
                    ended=AttemptState.LOST,
                    trigger="first_heartbeat",
                    reason=f"no heartbeat {never:.0f} s after launch (limit {limit:g} s on {attempt.provider})",
                )
            elif (
                status is not None and status.state == BackendState.RUNNING and attempt.state == AttemptState.LAUNCHING
            ):
                self._start_running(attempt)
        return applied

    def _start_running(self, attempt: Attempt) -> None:
        """The backend says a launching attempt runs: the store decides whether it may (a hedge's first only).

        The resources of the siblings it beat, or its own when it lost, are
        stopped now; ``release_finished`` repeats that if a cancel fails.
        """
        started = self.store.start_running(attempt.id, actor=self.scheduler_id)
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

    def start_leading(self) -> None:
        """This scheduler was just elected: note when, and release from here on (reconciliation covers before).

        The cursor is taken now, not at the next release round, so attempts
        ending in between are released too.
        """
        self.leading_since = self.clock()
        self._release_cursor = self.store.last_event_id()

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
        return self._apply(attempt, status, rules)

    def _apply(self, attempt: Attempt, status: BackendStatus, rules: FailoverRules) -> int:
        """A final backend status: fail over a retryable ending, else end the attempt and its task."""
        attempt_state, task_state = _OUTCOMES[status.state]
        if status.state == BackendState.LOST and self.may_still_be_sending(attempt):
            return 0  # "unknown attempt" may only mean its launch has not gone out yet
        if task_state == TaskState.FAILED and is_retryable(attempt_state, status.exit_code):
            return self._fail_over(
                attempt,
                rules,
                ended=attempt_state,
                trigger=_trigger(attempt_state),
                reason=status.reason or f"the backend reported {status.state.value}",
                exit_code=status.exit_code,
            )
        done = advance(
            self.store,
            attempt.id,
            attempt_state,
            task_state,
            actor=self.scheduler_id,
            reason=status.reason,
            exit_code=status.exit_code,
        )
        if done and self.metrics:
            self.metrics.attempts.labels(provider=attempt.provider, outcome=attempt_state.value).inc()
        return int(done)

    def _never_called_in(self, attempt: Attempt, last_heartbeat: datetime | None, rules: FailoverRules) -> float | None:
        """:func:`never_called_in`, except for a launch that may still be on its way (nothing to cancel yet)."""
        if self.may_still_be_sending(attempt):
            return None
        return never_called_in(attempt, last_heartbeat=last_heartbeat, rules=rules, now=self.clock())

    def _silent_seconds(self, attempt: Attempt, last_heartbeat: datetime | None, rules: FailoverRules) -> float | None:
        """How long a running attempt's worker has been silent, once past the timeout; else None.

        Only a worker that has called in at least once is held to it; one
        that never did is held to the first-heartbeat limit instead
        (:func:`never_called_in`).
        """
        if attempt.state != AttemptState.RUNNING or last_heartbeat is None:
            return None
        silent = (self.clock() - last_heartbeat).total_seconds()
        return silent if silent > rules.heartbeat_timeout_seconds else None

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
            if not is_retryable(attempt.state, attempt.exit_code):
                continue
            task = self.store.get_task(attempt.task_id)
            applied += self._fail_over(
                attempt,
                FailoverRules.of(policies.for_tenant(task.spec.tenant)),
                ended=None,
                trigger=_trigger(attempt.state),
                reason=attempt.reason or attempt.state.value,
            )
        return applied

    def _fail_over(
        self,
        attempt: Attempt,
        rules: FailoverRules,
        *,
        ended: AttemptState | None,
        trigger: str,
        reason: str,
        exit_code: int | None = None,
        retryable: Callable[[AttemptState, int | None], bool] = is_retryable,
    ) -> int:
        """End the attempt (unless it has ended) and re-queue or fail its task, in one store transaction."""
        result = self.store.fail_over(
            attempt.id,
            actor=self.scheduler_id,
            trigger=trigger,
            reason=reason,
            ended=ended,
            exit_code=exit_code,
            retryable=retryable,
            max_attempts=rules.max_attempts,
            backoff_seconds=rules.backoff_seconds,
        )
        if result.outcome is None:
            if not result.ended:
                return 0  # another scheduler or the worker's callback got there first
            # ended here, but the task waits on a live sibling of its hedged launch (or has finished)
            if self.metrics and ended is not None:
                self.metrics.attempts.labels(provider=attempt.provider, outcome=ended.value).inc()
            return 1
        log.warning(
            "",
            extra={
                "event": "attempt.failover",
                "task_id": attempt.task_id,
                "attempt_id": attempt.id,
                "target": attempt.target,
                "trigger": trigger,
                "reason": reason,
                "outcome": result.outcome,
                "attempts": result.attempts,
            },
        )
        if ended is not None and self.metrics:
            self.metrics.attempts.labels(provider=attempt.provider, outcome=ended.value).inc()
        return 1


def _taken(snapshot: SignalSnapshot, group: list[Candidate]) -> SignalSnapshot:
    """The snapshot with one free GPU less on each target of ``group``: what the batch's next plans see.

    Without it every task of a batch would see the same free slots, and all
    but the first few would be refused at launch instead of waiting.
    """
    samples: dict[str, SignalSample] | None = None
    for candidate in group:
        key = f"{CAPACITY_SOURCE}/{candidate.target}"
        sample = snapshot.samples.get(key)
        if sample is None:
            continue
        if samples is None:
            samples = dict(snapshot.samples)
        samples[key] = dataclasses.replace(sample, value=max(sample.value - 1.0, 0.0))
    return snapshot if samples is None else dataclasses.replace(snapshot, samples=samples)


def _launched_together(usable: list[Candidate]) -> list[Candidate]:
    """The candidates launched at once: the leading ones of a hedge group when two or more are usable, else the first.

    A hedged candidate this scheduler cannot use (no such provider here,
    private data) leaves the group smaller; a group of one is a launch alone.
    """
    if not usable:
        return []
    group = usable[0].hedge_group
    together = list(itertools.takewhile(lambda c: group is not None and c.hedge_group == group, usable))
    return together if len(together) >= 2 else usable[:1]


def _trigger(state: AttemptState) -> str:
    """The failover trigger named after how the attempt ended: preempted, lost, or a crash's exit code."""
    return {AttemptState.PREEMPTED: "preempted", AttemptState.LOST: "lost"}.get(state, "exit_code")
