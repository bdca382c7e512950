"""Placing: claim queued tasks, plan each with the pure ``plan()``, launch the plan.

``place_batch`` claims queued tasks (atomically: two schedulers never take
the same task), plans each with the pure ``plan()``, stores the receipt,
then walks the plan: one attempt per candidate until a provider accepts the
launch. A launch error moves on to the next candidate and is recorded on
the attempt; a terminal one (``InvalidSpec``) stops there. A hedged plan
launches its hedge group at once, one attempt per candidate; the first to
run wins and the others are cancelled (docs/reliability.md, "Hedged
launches").
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from controlplane.dataplane.errors import ChecksumMismatch, StagingError
from controlplane.domain import (
    Attempt,
    AttemptState,
    Candidate,
    DataSensitivity,
    InvalidSpec,
    InvalidTransition,
    ProviderError,
    SignalSnapshot,
    Target,
    Task,
    TaskState,
    Unavailable,
    spot_price_key,
)
from controlplane.policy import CAPACITY_SOURCE, Policy
from controlplane.policy_sources import PolicySet
from controlplane.scheduler.base import FENCE_CHECK_S, SchedulerBase, log
from controlplane.scheduler.batch_capacity import taken_by_launch
from controlplane.scheduler.outcomes import FailoverRules
from controlplane.scheduler.queueing import NoLaunch, max_queue_seconds, no_launch, overdue, shortage_wait
from controlplane.scheduler.wakeups import EVERY_REASON, held_by_breakers, probing_targets
from controlplane.scheduler.workerspec import placed_uris, render_worker_spec
from controlplane.signals.snapshot_json import snapshot_to_json
from controlplane.store import PlannedLaunch, StateMismatch, backing_off, wake_waiting, wake_waiting_for
from providers.base import LaunchRequest

__all__ = ["Placing"]


@dataclass(frozen=True)
class _Planned:
    """One claimed task of a batch, planned: what to launch, its tokens, and what to try after a refusal."""

    task: Task
    launch: PlannedLaunch
    tokens: list[str]
    #: the usable candidates after the launched group, walked one by one if all of the group is refused
    rest: list[Candidate]
    #: why candidates were left out or refused, for the task's failure reason
    history: list[str]

    @property
    def group(self) -> list[Candidate]:
        """The candidates launched together now (one, or a hedge group); none when the task waits or fails."""
        return [self.launch.candidate, *self.launch.hedged] if self.launch.candidate is not None else []


class Placing(SchedulerBase):
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
        # one policy set and one snapshot per batch: every receipt of the batch saw the same world, and the
        # waiting tasks woken before the claim were woken by it
        policies = self.policy()
        snapshot = self.snapshot(policies)
        self._wake_waiting(policies, snapshot)
        tasks = self.store.claim_queued(batch_size=self.batch_size, scheduler_id=self.scheduler_id)
        if not tasks:
            self._waits.planned({}, claimed_any=False)
            return 0
        seen = snapshot  # less each slot the batch takes
        batch: list[_Planned] = []
        for task in tasks:
            planned = self._plan_one(task, seen, policies)
            seen = taken_by_launch(seen, planned.group, task.spec.priority)
            batch.append(planned)
        self._waits.waiting_for_capacity(
            rejection.target
            for p in batch
            if p.launch.wait is not None
            for rejection in p.launch.plan.rejections
            if rejection.code == "no_capacity"
        )
        # the batch's snapshot is stored with its receipts: `policy simulate` replays them on it
        groups = self.store.start_launch_groups(
            [planned.launch for planned in batch],
            actor=self.scheduler_id,
            snapshot=(snapshot.taken_at, snapshot_to_json(snapshot)),
        )
        refused = self._send_batch(batch, groups)
        # launched: sent, not refused everywhere; a wave woken for a change that only brought refusals stops there,
        # rather than waking the same tasks, sent back to wait, into the same refusals again
        self._waits.planned({p.task.id: bool(p.group) and p.task.id not in refused for p in batch}, claimed_any=True)
        return len(tasks)

    def _plan_one(self, task: Task, seen: SignalSnapshot, policies: Policy | PolicySet) -> _Planned:
        """Plan one claimed task on the batch's snapshot: the group to launch now, or why nothing launches."""
        started = time.perf_counter()
        policy = policies.for_tenant(task.spec.tenant)
        now = self.clock()
        decision = self.planner(task, seen, policy, now)
        if self.metrics:
            self.metrics.plan_seconds.observe(time.perf_counter() - started)
        history: list[str] = []
        late = overdue(task=task, now=now)
        usable = [] if late else self._gate_probes(self._usable(task, decision.candidates, history, policy), history)
        group = _launched_together(usable)
        self._register_probes(task.id, group)
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
        launch = PlannedLaunch(
            plan=decision,
            candidate=group[0] if group else None,
            token_sha256=issued[0][1] if issued else None,
            failure=nothing.failure if nothing else None,
            wait=nothing.wait if nothing else None,
            not_before=nothing.not_before if nothing else None,
            hedged=tuple(group[1:]),
            hedged_token_sha256=tuple(sha256 for _, sha256 in issued[1:]),
            output_uris=tuple(_output_at(task, candidate, policy.target(candidate.target)) for candidate in group),
        )
        return _Planned(
            task=task,
            launch=launch,
            tokens=[token for token, _ in issued],
            rest=usable[len(group) :],
            history=history,
        )

    def _send_batch(self, batch: list[_Planned], groups: Sequence[Sequence[Attempt]]) -> set[str]:
        """Send the batch's launches (its attempt rows are written), then record their backend refs at once.

        Returns the tasks whose every candidate refused the launch (sent back to wait, or failed).
        """
        refused: set[str] = set()
        sending = [attempt.id for attempts in groups for attempt in attempts]
        self._sending.update(sending)  # until their refs are recorded: "unknown" to a backend means "not sent yet"
        try:
            launched: dict[str, str] = {}
            for planned, attempts in zip(batch, groups, strict=True):
                task, launch, history = planned.task, planned.launch, planned.history
                if not attempts or launch.candidate is None:
                    continue  # failed with its reason, or cancelled meanwhile
                members = list(zip(attempts, [launch.candidate, *launch.hedged], planned.tokens, strict=True))
                refs, refusals = self._send_group(task, members, history)
                launched.update(refs)
                if len(refusals) < len(members):
                    continue  # launched (a hedged launch: at least one of its siblings), or cancelled meanwhile
                if not all(refusal.retryable for _, refusal in refusals):  # terminal (InvalidSpec), no sibling launched
                    self._fail_task(task.id, "launch refused: " + "; ".join(history))
                    refused.add(task.id)
                elif not self._launch(task, planned.rest, history, last=attempts[-1], refused=refusals):
                    refused.add(task.id)
            self.store.record_backend_refs(launched)
        finally:
            self._sending.difference_update(sending)
        return refused

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
                self._probes[candidate.breaker_probe] = (task_id, self.clock())

    def _probe_in_flight(self, key: str) -> bool:
        """Whether the probe sent to breaker ``key`` is still launching or running (or was sent moments ago)."""
        entry = self._probes.get(key)
        if entry is None:
            return False
        task_id, since = entry
        # the scheduler's clock, not the process's: under the simulator's virtual clock the same seed must give
        # the same decisions however fast the machine runs
        if (self.clock() - since).total_seconds() < self.probe_launch_s:
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

    def _wake_waiting(self, policies: Policy | PolicySet, snapshot: SignalSnapshot) -> None:
        """Make waiting tasks claimable now when what they wait for may have changed, instead of after their backoff.

        Free capacity: per target with free slots, at most that many of the
        tasks waiting for capacity on it, so a cluster that is full while spot
        has room does not wake (and re-plan) every task waiting for the
        cluster every round; not on a spot target whose every offer's breaker
        is open (``wakeups.held_by_breakers``: the plan would turn them back
        ``breaker_open``). Anything else a queue reason names (a breaker, a
        price, the budget, a rule's ``when``, the policy itself): the tasks
        waiting for that, when the snapshot shows it changed since the last
        batch, in waves of one batch that go on while they launch
        (``scheduler/wakeups.py``). One cheap read when nothing waits.
        """
        codes = self._waits.wave_due(self._waits.observe(policies, snapshot))
        if not backing_off(self.store):
            self._waits.nobody_asleep()
            return
        if codes:
            woken = wake_waiting_for(self.store, None if codes == EVERY_REASON else codes, limit=self.batch_size)
            self._waits.woke(woken, limit=self.batch_size)
        now = snapshot.taken_at
        held = held_by_breakers(policies, snapshot, now)
        free = self._waits.capacity_to_ask(
            {
                target: int(sample.value)
                for key, sample in snapshot.samples.items()
                if key.startswith(f"{CAPACITY_SOURCE}/") and not sample.is_stale(now) and sample.value >= 1
                for target in (key.removeprefix(f"{CAPACITY_SOURCE}/"),)
                if target not in held
            },
            now,
        )
        self._waits.capacity_woken(free, wake_waiting(self.store, free), now)
        if self._waits.probing:  # a breaker turned half-open: one task per target it covers goes to probe
            wake_waiting(self.store, probing_targets(policies, self._waits.probing), code="breaker_open")

    def _send_group(
        self, task: Task, members: list[tuple[Attempt, Candidate, str]], history: list[str]
    ) -> tuple[dict[str, str], list[tuple[str, ProviderError]]]:
        """Launch one attempt, or every sibling of a hedged launch: their backend refs, and the refusals by target.

        A sibling that ended before its turn (another one already won) is
        not sent at all. After the sends, a sibling that lost while the
        launches went out has its resource stopped at once: its cancel in
        ``release_finished`` may have come before the resource existed. A
        task whose first sibling was refused is retargeted to the first one
        that launched.
        """
        refs: dict[str, str] = {}
        refusals: list[tuple[str, ProviderError]] = []
        hedged = len(members) > 1
        for index, (attempt, candidate, token) in enumerate(members):
            if index > 0 and self.store.get_attempt(attempt.id).state.is_final:
                continue
            sent = self._send(task, candidate, attempt, token, history, hedged=hedged)
            if isinstance(sent, str):
                refs[attempt.id] = sent
            else:
                refusals.append((candidate.target, sent))
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
        self,
        task: Task,
        candidate: Candidate,
        attempt: Attempt,
        token: str,
        history: list[str],
        *,
        hedged: bool = False,
    ) -> str | ProviderError:
        """Launch one attempt: its backend ref, or the provider's refusal (recorded on the attempt)."""
        attempt_id = attempt.id
        provider = self.providers[candidate.provider]
        # a leader deposed since its last write stops here, before the launch leaves this process (checked
        # at most once a second: a takeover waits out a whole lease, and the new leader gives launches
        # already under way SEND_GRACE_S)
        self.store.check_fence(max_age_s=FENCE_CHECK_S)
        started = time.perf_counter()
        # the target as the policy in force defines it: its store decides where a video's checkpoint goes
        target = self.policy().for_tenant(task.spec.tenant).target(candidate.target)
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
                provider=candidate.provider,
                target_storage=target.storage if target is not None else None,
            )
            # where the worker writes the output, in the store before the launch so GET /output finds it: stored
            # with the attempt row; written again only if the target's store changed since (a policy reload)
            output_at = _output_at(task, candidate, target)
            if output_at != attempt.output_uri:
                self.store.record_output_uri(attempt_id, output_uri=output_at)
            if self.stager is not None:
                self._stage(task, candidate, attempt_id)
            result = provider.launch(
                LaunchRequest(
                    attempt_id=attempt_id,
                    task_id=task.id,
                    candidate=candidate,
                    worker_spec=spec,
                    deadline_seconds=task.spec.deadline_seconds,
                    priority=task.spec.priority.value,
                    target_storage=target.storage if target is not None else None,
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
            self.metrics.placements.labels(provider=candidate.provider, target=candidate.target).inc()
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

    def _stage(self, task: Task, candidate: Candidate, attempt_id: str) -> None:
        """Copy the task's local inputs into the candidate's store, if its target needs them staged.

        Deciding whether anything needs staging is pure (the target's
        storage from the policy, :meth:`Stager.pending`): a launch with
        nothing to stage touches no store. A staging failure becomes the
        candidate's launch refusal: a store that did not answer, a missing
        bucket, or a private task's bytes refused for a non-private target
        moves on to the next candidate as a capacity error does; an input
        whose bytes changed since upload is refused everywhere.
        """
        assert self.stager is not None
        policy = self.policy().for_tenant(task.spec.tenant)
        target = policy.target(candidate.target)
        storage = target.storage if target is not None else None
        if not self.stager.pending(task, provider=candidate.provider, storage=storage):
            return
        try:
            self.stager.stage(
                task,
                attempt_id=attempt_id,
                target=candidate.target,
                provider=candidate.provider,
                storage=storage,
                private_target=self._private_target(candidate, policy),
            )
        except StagingError as exc:
            refusal: ProviderError = (
                InvalidSpec(str(exc), target=candidate.target)
                if isinstance(exc, ChecksumMismatch)
                else Unavailable(str(exc), target=candidate.target)
            )
            refusal.code = exc.code  # the receipt and the attempt say staging, not the provider
            raise refusal from exc

    def _launch(
        self,
        task: Task,
        candidates: list[Candidate],
        history: list[str],
        *,
        last: Attempt,
        refused: list[tuple[str, ProviderError]],
    ) -> bool:
        """The per-task path after a launch error: one attempt per remaining candidate; whether one launched.

        When every candidate refused for a reason that passes (capacity,
        throttling, an API that timed out), the task is planned again later
        (:meth:`_retry_later`) rather than failed; a terminal refusal
        (``InvalidSpec``) fails it. ``last`` is the attempt refused before,
        ``refused`` the refusals so far (target, error), added to here.
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
                output_uri=_output_at(
                    task, candidate, self.policy().for_tenant(task.spec.tenant).target(candidate.target)
                ),
            )
            current = self.store.get_task(task.id)
            if current.state == TaskState.CANCELLED:
                self.store.transition_attempt(
                    attempt.id,
                    wanted=AttemptState.CANCELLED,
                    actor=self.scheduler_id,
                    reason="task cancelled before launch",
                )
                return False
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
                sent = self._send(task, candidate, attempt, token, history)
                if isinstance(sent, str):
                    self.store.set_backend_ref(attempt.id, backend_ref=sent)
                    return True
            finally:
                self._sending.discard(attempt.id)
            refused.append((candidate.target, sent))
            if not sent.retryable:
                self._fail_task(task.id, "every candidate failed to launch: " + "; ".join(history))
                return False
        self._retry_later(task, last, history, refused)
        return False

    def _retry_later(
        self, task: Task, last: Attempt, history: list[str], refused: list[tuple[str, ProviderError]]
    ) -> None:
        """Every candidate refused, each for a reason that passes: plan the task again after a backoff.

        A cluster API that timed out, or a capacity error on every offer,
        must not fail the task for good: it goes back to ``queued`` through
        the failover of an attempt that ended after launch (trigger
        ``launch_refused``: backoff, a new plan, a new receipt). Only
        shortages (capacity, the market price): it waits for room without
        spending an attempt, bounded by the queue limit and its deadline
        (``queueing.shortage_wait``). Any other refusal spends one of the
        tenant's max attempts. A resource a timed-out launch may have
        created belongs to an ended attempt: ``release_finished`` deletes it.
        """
        policy = self.policy().for_tenant(task.spec.tenant)
        shortage = shortage_wait(refused, max_queue_s=max_queue_seconds(policy))
        self._fail_over(
            last,
            FailoverRules.of(policy),
            ended=None,
            trigger="launch_refused",
            reason="every candidate refused the launch: " + "; ".join(history),
            retryable=lambda _state, _code: True,  # the refusals were checked: each one passes
            shortage=shortage,
        )

    def _fail_task(self, task_id: str, reason: str) -> None:
        with contextlib.suppress(InvalidTransition, StateMismatch):  # cancelled meanwhile
            self.store.transition_task(task_id, wanted=TaskState.FAILED, actor=self.scheduler_id, reason=reason)


def _attempt_token() -> tuple[str, str]:
    """A new attempt's callback token and its sha256 (only the hash is stored)."""
    token = "att_" + secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


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


def _output_at(task: Task, candidate: Candidate, target: Target | None) -> str:
    """Where the worker on ``candidate`` (the policy's ``target`` of its name) writes the task's output."""
    return placed_uris(
        task, provider=candidate.provider, store=target.storage if target is not None else None
    ).output_at
