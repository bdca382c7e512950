"""The :class:`Store` facade: one object with every store operation, each delegating to its aggregate module.

Pattern: a :class:`Store` wraps an :class:`~sqlalchemy.Engine` (through
:class:`~controlplane.store.core.StoreCore`); each public method is one
short transaction, commits before it returns, and hands back the domain's
frozen dataclasses (or the small records of :mod:`controlplane.store.records`),
never rows or ORM objects. A state change and its event are written in the
same transaction, so there is never a transition without its event or an
event without its transition; a refused change raises and writes nothing.

The SQL lives in the aggregate modules (:mod:`~controlplane.store.tasks`,
:mod:`~controlplane.store.launches`, :mod:`~controlplane.store.attempts`,
:mod:`~controlplane.store.failover`, :mod:`~controlplane.store.decisions`,
:mod:`~controlplane.store.events`, :mod:`~controlplane.store.policy_versions`,
:mod:`~controlplane.store.signal_samples`); this class only names them.
:meth:`Store.claim_queued` uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so
several schedulers claim disjoint batches without waiting on each other.

Every method takes keyword arguments only (the first id may be positional)
and reads the time from the store's ``clock`` (aware UTC), which tests may
replace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from controlplane.domain import (
    Attempt,
    AttemptState,
    DataSensitivity,
    PlacementPlan,
    Priority,
    SignalSample,
    Task,
    TaskSpec,
    TaskState,
)
from controlplane.store import attempts as attempt_ops
from controlplane.store import decisions as decision_ops
from controlplane.store import events as event_ops
from controlplane.store import failover as failover_ops
from controlplane.store import launches as launch_ops
from controlplane.store import policy_versions as policy_ops
from controlplane.store import running as running_ops
from controlplane.store import signal_samples as signal_ops
from controlplane.store import tasks as task_ops
from controlplane.store.attempts import FinishedAttempt, RunningStart
from controlplane.store.core import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, StoreCore
from controlplane.store.decisions import RecordedDecision
from controlplane.store.errors import IdempotencyConflict
from controlplane.store.failover import FailoverResult, Shortage
from controlplane.store.follow_view import FollowView, follow_view
from controlplane.store.launches import PlannedLaunch
from controlplane.store.policy_versions import policy_version_of
from controlplane.store.records import AttemptProgress, Event, PolicyApplication, PolicyVersion
from controlplane.store.running import Outcome
from controlplane.store.tasks import NewTask

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "FailoverResult",
    "FinishedAttempt",
    "NewTask",
    "PlannedLaunch",
    "RecordedDecision",
    "RunningStart",
    "Store",
    "policy_version_of",
]


class Store(StoreCore):
    """The control plane's state, one short transaction per call."""

    # -- tasks ---------------------------------------------------------------------------------

    def create_task(
        self,
        *,
        spec: TaskSpec,
        request_hash: str,
        idempotency_key: str | None = None,
        actor: str = "api",
    ) -> tuple[Task, bool]:
        """Store a new queued task; ``(task, created)``.

        With an ``idempotency_key``, the same key and ``request_hash`` for the
        same tenant return the task stored the first time (``created`` is
        False); the same key with another hash raises
        :class:`IdempotencyConflict` and stores nothing.
        """
        (outcome,) = self.create_tasks(
            [NewTask(spec=spec, request_hash=request_hash, idempotency_key=idempotency_key, actor=actor)]
        )
        if isinstance(outcome, IdempotencyConflict):
            raise outcome
        return outcome

    def create_tasks(self, batch: Sequence[NewTask]) -> list[tuple[Task, bool] | IdempotencyConflict]:
        """Store many submissions in one transaction (group commit); one outcome per item, in order.

        Each outcome is what :meth:`create_task` would return for that item,
        or the :class:`IdempotencyConflict` it would raise. A key repeated
        inside the batch behaves as if the items had come one after another.
        If another process stores one of the keys meanwhile (the unique
        index refuses the batch), the items are retried one by one, so one
        late key never fails its neighbours.
        """
        return task_ops.create_tasks(self, batch)

    def _insert_tasks(
        self, conn: Connection, batch: Sequence[NewTask]
    ) -> list[tuple[Task, bool] | IdempotencyConflict]:
        """The inserts of :meth:`create_tasks` inside a transaction the caller holds (tests race with it)."""
        return task_ops.insert_tasks(self, conn, batch)

    def task_for_key(self, *, tenant: str, idempotency_key: str) -> tuple[Task, str] | None:
        """The task a tenant stored under ``idempotency_key`` and its request hash; None for a new key."""
        return task_ops.task_for_key(self, tenant=tenant, idempotency_key=idempotency_key)

    def get_task(self, task_id: str) -> Task:
        """The task, or :class:`NotFound`."""
        return task_ops.get_task(self, task_id)

    def get_tasks(self, task_ids: Sequence[str]) -> dict[str, Task]:
        """The tasks of ``task_ids`` by id; unknown ids are left out."""
        return task_ops.get_tasks(self, task_ids)

    def list_tasks(
        self,
        *,
        state: TaskState | None = None,
        priority: Priority | None = None,
        data_sensitivity: DataSensitivity | None = None,
        target: str | None = None,
        tenant: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        newest_first: bool = True,
    ) -> tuple[list[Task], str | None]:
        """One page of tasks matching every given filter, and the cursor of the next page.

        Tasks come in id order, which is creation order (newest first unless
        ``newest_first`` is False). ``created_after`` is inclusive,
        ``created_before`` exclusive. ``cursor`` is the value a previous call
        returned; ``None`` as the next cursor means this was the last page.
        """
        return task_ops.list_tasks(
            self,
            state=state,
            priority=priority,
            data_sensitivity=data_sensitivity,
            target=target,
            tenant=tenant,
            created_after=created_after,
            created_before=created_before,
            cursor=cursor,
            limit=limit,
            newest_first=newest_first,
        )

    def retarget_task(self, task_id: str, *, target: str, actor: str) -> bool:
        """Point a launching task at the target of its new attempt (failover); False if it left launching.

        The state does not change, so this is not a transition; the event
        (``task.retargeted``, from and to) keeps the chain readable.
        """
        return task_ops.retarget_task(self, task_id, target=target, actor=actor)

    def transition_task(
        self,
        task_id: str,
        *,
        wanted: TaskState,
        actor: str,
        reason: str | None = None,
        expected: TaskState | None = None,
        target: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Task:
        """Move a task to ``wanted`` and record the event, in one transaction.

        Raises :class:`~controlplane.domain.InvalidTransition` if the state
        machine refuses, :class:`StateMismatch` if ``expected`` is given and
        the task is in another state, :class:`NotFound`; nothing is written
        then. Sets ``planned_at`` (planned), ``started_at`` (running, first
        time) and ``finished_at`` (final states); ``reason`` and ``target``
        replace the stored ones when given.
        """
        return task_ops.change_state(
            self, task_id, wanted=wanted, actor=actor, reason=reason, expected=expected, target=target, detail=detail
        )

    def claim_queued(self, *, batch_size: int, scheduler_id: str) -> list[Task]:
        """Atomically move up to ``batch_size`` queued tasks to planned for ``scheduler_id``.

        Most urgent first, then oldest first. Two schedulers never get the
        same task: PostgreSQL skips rows another claim has locked, SQLite runs
        one claim at a time (``BEGIN IMMEDIATE``). A task re-queued by
        :meth:`fail_over`, or waiting for a placement, is not claimed before
        its ``not_before``. Claiming a waiting task again writes no
        ``task.claimed`` event: its ``task.waiting`` event said it waits, and
        the next event (a new reason, its launch, its failure) says what came
        of it, so hundreds of waiting tasks re-planned each round add nothing
        to the event log (docs/reliability.md, "Queueing").
        """
        return task_ops.claim_queued(self, batch_size=batch_size, scheduler_id=scheduler_id)

    def count_tasks_in(self, *states: TaskState) -> int:
        """How many tasks are in any of ``states`` (cheap: counts those states' rows only, not the whole table)."""
        return task_ops.count_tasks_in(self, states)

    def count_tasks_by_state(self) -> dict[TaskState, int]:
        """How many tasks are in each state (every state present, zero included)."""
        return task_ops.count_tasks_by_state(self)

    # -- decisions (receipts) and launches -------------------------------------------------------

    def record_decision(self, *, plan: PlacementPlan, actor: str = "scheduler") -> str:
        """Store a placement plan as the task's newest receipt; returns the decision id."""
        return decision_ops.record_decision(self, plan=plan, actor=actor)

    def start_launches(
        self,
        launches: Sequence[PlannedLaunch],
        *,
        actor: str,
        snapshot: tuple[datetime, Mapping[str, Any]] | None = None,
    ) -> list[Attempt | None]:
        """Store a batch of receipts and the launch each one leads to, in one transaction.

        For each item: its plan becomes the task's newest receipt; then, if
        the task is still planned, either a launching attempt on
        ``candidate`` is created and the task moves to launching (the
        attempt is returned), or, without a candidate, the task fails with
        ``failure`` (None is returned). A task that left planned meanwhile
        (cancelled) keeps only its receipt (None). This is the batched form
        of ``record_decision`` + ``create_attempt`` + ``transition_task``,
        with the same rows and events, for the scheduler's hot path.

        ``snapshot`` (taken_at, snapshot JSON) is the batch's signal
        snapshot: stored once and named by every receipt of the batch, so a
        replay can plan these tasks again under another policy.

        A hedged item's siblings are created too; this form returns the
        first attempt of each item only (:meth:`start_launch_groups` returns
        them all).
        """
        groups = self.start_launch_groups(launches, actor=actor, snapshot=snapshot)
        return [group[0] if group else None for group in groups]

    def start_launch_groups(
        self,
        launches: Sequence[PlannedLaunch],
        *,
        actor: str,
        snapshot: tuple[datetime, Mapping[str, Any]] | None = None,
    ) -> list[tuple[Attempt, ...]]:
        """:meth:`start_launches`, returning every attempt each item started, in plan order (empty: none).

        An item with ``hedged`` candidates starts one launching attempt per
        candidate of its hedge group, numbered one after the other, each
        with ``hedge_group`` set to the number of the first: siblings, not
        one after the other, for failover (:meth:`fail_over`). The task
        names the first candidate's target until one of them runs
        (:meth:`start_running`).
        """
        return launch_ops.start_launch_groups(self, launches, actor=actor, snapshot=snapshot)

    def record_backend_refs(self, refs: Mapping[str, str]) -> None:
        """Record the provider's handle of each launched attempt (attempt id -> backend ref) at once."""
        launch_ops.record_backend_refs(self, refs)

    def get_decisions(self, task_id: str) -> list[PlacementPlan]:
        """Every plan made for the task, oldest first (failover appends one per planning)."""
        return decision_ops.get_decisions(self, task_id)

    def recorded_decisions(
        self, *, since: datetime | None = None, last: int | None = None, chunk: int = 2000
    ) -> Iterator[RecordedDecision]:
        """Each task's first receipt, oldest first: since a time, or the ``last`` N, or all.

        Streams in chunks by decision id so a day of traffic never sits in
        memory at once; every snapshot is read once per chunk.
        """
        return decision_ops.recorded_decisions(self, since=since, last=last, chunk=chunk)

    # -- attempts ------------------------------------------------------------------------------

    def create_attempt(
        self,
        *,
        task_id: str,
        target: str,
        provider: str,
        token_sha256: str,
        region: str | None = None,
        instance_type: str | None = None,
        actor: str = "scheduler",
        output_uri: str | None = None,
    ) -> Attempt:
        """A new launching attempt numbered after the task's previous one.

        ``token_sha256`` is the hex sha256 of the attempt's callback token;
        the token itself never reaches the database. ``output_uri``: where
        its worker will write the output (the output route reads it).
        """
        return attempt_ops.create_attempt(
            self,
            task_id=task_id,
            target=target,
            provider=provider,
            token_sha256=token_sha256,
            region=region,
            instance_type=instance_type,
            actor=actor,
            output_uri=output_uri,
        )

    def transition_attempt(
        self,
        attempt_id: str,
        *,
        wanted: AttemptState,
        actor: str,
        reason: str | None = None,
        exit_code: int | None = None,
        backend_ref: str | None = None,
        expected: AttemptState | None = None,
    ) -> Attempt:
        """Move an attempt to ``wanted`` and record the event, in one transaction.

        Same contract as :meth:`transition_task`; ``reason``, ``exit_code``
        and ``backend_ref`` replace the stored ones when given.
        """
        return attempt_ops.transition_attempt(
            self,
            attempt_id,
            wanted=wanted,
            actor=actor,
            reason=reason,
            exit_code=exit_code,
            backend_ref=backend_ref,
            expected=expected,
        )

    def start_running(self, attempt_id: str, *, actor: str) -> RunningStart:
        """Move a launching attempt and its task to running, unless a sibling of its hedged launch won first.

        One transaction, with the task and then its attempts locked (the
        order :meth:`fail_over` keeps too, so the two never wait on each
        other): the attempt wins only if no other attempt of its task is
        running or succeeded. Winning moves it to running, its
        still-launching hedge siblings to cancelled ("hedge lost to <id>",
        returned in ``cancelled``: their backend resources are to be
        stopped) and the task from launching to running, on the winner's
        target. An attempt that loses (another one runs or succeeded), and a
        hedged one whose task has ended, is cancelled itself. An attempt
        already running or ended is left as it is. For an attempt launched
        alone this is what a first heartbeat always did: the attempt, and a
        launching task, to running.
        """
        return running_ops.start_running_many(self, [attempt_id], actor=actor)[0]

    def start_running_many(self, attempt_ids: Sequence[str], *, actor: str) -> list[RunningStart]:
        """:meth:`start_running` for each attempt in order, in one transaction per 500 (a round of ``follow``)."""
        return running_ops.start_running_many(self, attempt_ids, actor=actor)

    def start_and_settle(
        self, starts: Sequence[str], outcomes: Sequence[Outcome], *, actor: str
    ) -> tuple[list[RunningStart], list[bool]]:
        """:meth:`start_running_many` then :meth:`apply_outcomes` in one transaction (a round of ``follow``)."""
        return running_ops.start_and_settle(self, starts, outcomes, actor=actor)

    def apply_outcomes(self, outcomes: Sequence[Outcome], *, actor: str) -> list[bool]:
        """Apply what became of each attempt to it and its task, in order, in one transaction per 500.

        Each item is decided as ``scheduler.outcomes.advance`` describes,
        on the rows as the items before it left them; False where the
        attempt had already ended (or lost its hedge).
        """
        return running_ops.apply_outcomes(self, outcomes, actor=actor)

    def set_backend_ref(self, attempt_id: str, *, backend_ref: str) -> Attempt:
        """Record the provider's handle for a launched attempt without changing its state."""
        return attempt_ops.set_backend_ref(self, attempt_id, backend_ref=backend_ref)

    def record_output_uri(self, attempt_id: str, *, output_uri: str) -> None:
        """Record where the attempt's worker writes the output, before it is launched."""
        attempt_ops.record_output_uri(self, attempt_id, output_uri=output_uri)

    def get_attempt(self, attempt_id: str) -> Attempt:
        """The attempt, or :class:`NotFound`."""
        return attempt_ops.get_attempt(self, attempt_id)

    def attempts_for(self, task_id: str) -> list[Attempt]:
        """The task's attempts, first to last."""
        return attempt_ops.attempts_for(self, task_id)

    def finished_attempts_after(self, event_id: int, *, limit: int = 500) -> list[FinishedAttempt]:
        """Attempts that became final after ``event_id`` (event id, attempt id, provider, state), oldest first."""
        return attempt_ops.finished_attempts_after(self, event_id, limit=limit)

    def follow_view(self, *, limit: int = 1000) -> FollowView:
        """The live attempts, their last heartbeats and their tasks' state and tenant, in one read (``follow``)."""
        return follow_view(self, limit=limit)

    def live_attempts(self, *, limit: int = 1000) -> list[Attempt]:
        """Attempts still launching or running, oldest first: what the scheduler follows."""
        return attempt_ops.live_attempts(self, limit=limit)

    def attempt_token_sha256(self, attempt_id: str) -> str:
        """The stored hash of the attempt's callback token (compare with ``hmac.compare_digest``)."""
        return attempt_ops.attempt_token_sha256(self, attempt_id)

    def record_heartbeats(self, attempt_ids: Sequence[str]) -> None:
        """Note that the workers of ``attempt_ids`` called in now, in one write; ended or unknown ones are skipped."""
        attempt_ops.record_heartbeats(self, attempt_ids)

    def record_heartbeats_at(self, beats: Sequence[tuple[str, datetime]]) -> None:
        """Note that workers called in, each at its own (past) time, in one write; ended or unknown ones are skipped."""
        attempt_ops.record_heartbeats_at(self, beats)

    def record_heartbeat(self, attempt_id: str, *, progress: Mapping[str, Any] | None = None) -> Attempt:
        """Note that the attempt's worker called in, replacing its progress when given.

        A heartbeat for an attempt that already ended changes nothing; the
        returned attempt shows its final state.
        """
        return attempt_ops.record_heartbeat(self, attempt_id, progress=progress)

    def get_progress(self, attempt_id: str) -> AttemptProgress:
        """When the attempt's worker last called in, and the progress it reported."""
        return attempt_ops.get_progress(self, attempt_id)

    # -- failover ------------------------------------------------------------------------------

    def attempts_awaiting_failover(self, *, limit: int = 500) -> list[Attempt]:
        """Ended attempts whose task still waits on them: the worker's callback ended them, nobody failed over.

        The newest attempt of each launching or running task with no live
        attempt (every attempt of the newest launch, when it was hedged),
        when it ended preempted, lost, or failed with an exit code (the
        caller decides which endings are retryable). Oldest ending first.
        """
        return failover_ops.attempts_awaiting_failover(self, limit=limit)

    def fail_over(
        self,
        attempt_id: str,
        *,
        actor: str,
        trigger: str,
        reason: str,
        retryable: Callable[[AttemptState, int | None], bool],
        max_attempts: int,
        backoff_seconds: Callable[[int], float],
        ended: AttemptState | None = None,
        exit_code: int | None = None,
        shortage: Shortage | None = None,
    ) -> FailoverResult:
        """End an attempt after launch and send its task back to be planned again, in one transaction.

        A live attempt moves to ``ended`` (with ``reason`` and ``exit_code``);
        one that already ended (by its worker's callback) is taken as it is,
        if ``retryable(state, exit_code)`` says another attempt may follow.
        Then, only if the task is still launching or running and this is
        its newest attempt (or one of its newest hedged launch's siblings)
        with no live one beside it, the task either goes back to ``queued``
        (claimable after ``backoff_seconds(n)``, where n counts the task's
        failovers, this one included) or, when n reaches ``max_attempts``,
        fails with the reason. Both write an ``attempt.failover`` event
        (trigger, reason, n, outcome) and the task's transition. Whoever
        comes second (another scheduler, the callback racing the status
        poll, a sibling that ended earlier) finds the task moved on and gets
        outcome None, so a task is re-queued once per ended launch. A
        sibling that ends while another still lives gets its ending only
        (``ended``, outcome None): the live one decides.

        With ``shortage`` (every candidate refused the launch for want of
        room) no attempt is spent: the task goes back to ``queued`` as a
        waiting task with the shortage's queue reason (outcome "waiting",
        an ``attempt.refused`` event), or fails once it has waited the
        queue limit since it last needed a placement (:class:`Shortage`).
        The backoff counts both kinds.
        """
        return failover_ops.fail_over(
            self,
            attempt_id,
            actor=actor,
            trigger=trigger,
            reason=reason,
            retryable=retryable,
            max_attempts=max_attempts,
            backoff_seconds=backoff_seconds,
            ended=ended,
            exit_code=exit_code,
            shortage=shortage,
        )

    # -- events --------------------------------------------------------------------------------

    def list_events(self, task_id: str, *, after_id: int | None = None, limit: int | None = None) -> list[Event]:
        """The task's events in the order they happened (``after_id`` for polling)."""
        return event_ops.list_events(self, task_id, after_id=after_id, limit=limit)

    def last_event_id(self) -> int:
        """The newest event's id (0 when there is none): where a cursor over later events starts."""
        return event_ops.last_event_id(self)

    # -- policy versions and applications -------------------------------------------------------

    def save_policy_version(self, *, document: Mapping[str, Any], created_by: str, source: str) -> str:
        """Store a policy document once per content; returns its version (sha256)."""
        return policy_ops.save_policy_version(self, document=document, created_by=created_by, source=source)

    def get_policy_version(self, version: str) -> PolicyVersion:
        """A stored policy document, or :class:`NotFound`."""
        return policy_ops.get_policy_version(self, version)

    def find_policy_versions(self, *, prefix: str, limit: int = 2) -> list[str]:
        """Versions starting with ``prefix`` (hex), for short version ids on the command line."""
        return policy_ops.find_policy_versions(self, prefix=prefix, limit=limit)

    def list_policy_versions(self, *, limit: int = DEFAULT_PAGE_SIZE) -> list[PolicyVersion]:
        """The newest stored policy versions first."""
        return policy_ops.list_policy_versions(self, limit=limit)

    def record_policy_application(
        self,
        *,
        version: str,
        source: str,
        applied_by: str,
        modify_index: int | None = None,
        overlays: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int:
        """Note that a policy took effect (its documents must already be saved); returns the row id."""
        return policy_ops.record_policy_application(
            self, version=version, source=source, applied_by=applied_by, modify_index=modify_index, overlays=overlays
        )

    def list_policy_applications(self, *, limit: int = DEFAULT_PAGE_SIZE) -> list[PolicyApplication]:
        """Newest first: every time a control plane switched policy."""
        return policy_ops.list_policy_applications(self, limit=limit)

    # -- signal history --------------------------------------------------------------------------

    def record_signal_samples(self, samples: Sequence[SignalSample]) -> int:
        """Append polled values to the history; returns how many."""
        return signal_ops.record_signal_samples(self, samples)

    def signal_history(
        self,
        *,
        source: str | None = None,
        key: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[tuple[str, str, float, datetime]]:
        """(source, key, value, observed_at), newest first."""
        return signal_ops.signal_history(self, source=source, key=key, since=since, limit=limit)

    def prune_signal_samples(self, *, older_than: datetime, batch: int = 10_000) -> int:
        """Delete history older than the retention, in bounded batches so no transaction grows large."""
        return signal_ops.prune_signal_samples(self, older_than=older_than, batch=batch)
