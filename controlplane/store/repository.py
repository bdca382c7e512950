"""The repository: every SQL statement of the control plane lives here.

Pattern: a :class:`Store` wraps an :class:`~sqlalchemy.Engine`; each public
method is one short transaction (``connect()`` + ``begin()``), commits before
it returns, and hands back the domain's frozen dataclasses (or the small
records of :mod:`controlplane.store.records`), never rows or ORM objects.
A state change and its event are written in the same transaction, so there
is never a transition without its event or an event without its transition;
a refused change raises and writes nothing.

Concurrency: rows that are read and then changed are locked
(``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite every writing
transaction starts with ``BEGIN IMMEDIATE``, which serialises writers).
:meth:`Store.claim_queued` uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so
several schedulers claim disjoint batches without waiting on each other.

Every method takes keyword arguments only (the first id may be positional)
and reads the time from the store's ``clock`` (aware UTC), which tests may
replace.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Engine, Row, and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlalchemy.sql import Select

from controlplane.domain import (
    Attempt,
    AttemptState,
    Candidate,
    DataSensitivity,
    PlacementPlan,
    Priority,
    SignalSample,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
    check_attempt_transition,
    check_task_transition,
)
from controlplane.store.codec import plan_from_json, plan_to_json
from controlplane.store.columns import utcnow
from controlplane.store.engine import WRITE_OPTION
from controlplane.store.errors import IdempotencyConflict, NotFound, StateMismatch
from controlplane.store.ids import new_id
from controlplane.store.lease import Fence
from controlplane.store.records import AttemptProgress, Event, PolicyApplication, PolicyVersion
from controlplane.store.tables import (
    PRIORITY_RANK,
    attempts,
    decisions,
    events,
    policy_applications,
    policy_versions,
    signal_samples,
    signal_snapshots,
    tasks,
)

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

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def policy_version_of(document: Mapping[str, Any]) -> str:
    """The version of a policy document: sha256 of its canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _task(row: Row[Any]) -> Task:
    m = row._mapping
    spec = TaskSpec(
        tenant=m["tenant"],
        kind=TaskKind(m["kind"]),
        source_uri=m["source_uri"],
        target_uri=m["target_uri"],
        output_uri=m["output_uri"],
        priority=Priority(m["priority"]),
        data_sensitivity=DataSensitivity(m["data_sensitivity"]),
        deadline_seconds=m["deadline_seconds"],
        budget_usd=m["budget_usd"],
        options=dict(m["options"] or {}),
        labels=dict(m["labels"] or {}),
        input_bytes=m["input_bytes"],
    )
    return Task(
        id=m["id"],
        spec=spec,
        state=TaskState(m["state"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        reason=m["reason"],
        target=m["target"],
        queue_reason=m["queue_reason"],
        queued_since=m["queued_since"],
    )


def _attempt(row: Row[Any]) -> Attempt:
    m = row._mapping
    return Attempt(
        id=m["id"],
        task_id=m["task_id"],
        number=m["number"],
        target=m["target"],
        provider=m["provider"],
        state=AttemptState(m["state"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        region=m["region"],
        instance_type=m["instance_type"],
        backend_ref=m["backend_ref"],
        reason=m["reason"],
        exit_code=m["exit_code"],
        hedge_group=m["hedge_group"],
    )


def _event(row: Row[Any]) -> Event:
    m = row._mapping
    return Event(
        id=m["id"],
        task_id=m["task_id"],
        attempt_id=m["attempt_id"],
        at=m["at"],
        actor=m["actor"],
        kind=m["kind"],
        from_state=m["from_state"],
        to_state=m["to_state"],
        detail=dict(m["detail"] or {}),
    )


@dataclass(frozen=True, kw_only=True)
class NewTask:
    """One submission for :meth:`Store.create_tasks`."""

    spec: TaskSpec
    request_hash: str
    idempotency_key: str | None = None
    actor: str = "api"


def _task_row(item: NewTask, task_id: str, now: datetime) -> dict[str, Any]:
    spec = item.spec
    return {
        "id": task_id,
        "tenant": spec.tenant,
        "kind": spec.kind.value,
        "source_uri": spec.source_uri,
        "target_uri": spec.target_uri,
        "output_uri": spec.output_uri,
        "priority": spec.priority.value,
        "priority_rank": PRIORITY_RANK[spec.priority],
        "data_sensitivity": spec.data_sensitivity.value,
        "deadline_seconds": spec.deadline_seconds,
        "budget_usd": spec.budget_usd,
        "options": dict(spec.options),
        "labels": dict(spec.labels),
        "input_bytes": spec.input_bytes,
        "state": TaskState.QUEUED.value,
        "created_at": now,
        "updated_at": now,
        "idempotency_key": item.idempotency_key,
        "request_hash": item.request_hash,
    }


def _replay(item: NewTask, row: Row[Any]) -> tuple[Task, bool] | IdempotencyConflict:
    """The answer to a repeated key: the stored task, or a conflict if the body differs."""
    if row.request_hash != item.request_hash:
        return IdempotencyConflict(tenant=row.tenant, idempotency_key=row.idempotency_key, task_id=row.id)
    return _task(row), False


@dataclass(frozen=True, kw_only=True)
class PlannedLaunch:
    """One task's receipt and what follows from it, for :meth:`Store.start_launches`.

    ``candidate`` is the plan's first launchable candidate, with the sha256
    of the new attempt's callback token; without one the task waits, back
    in ``queued`` with ``wait`` as its queue reason until ``not_before``
    (docs/reliability.md, "Queueing"), or, without ``wait`` either, fails
    with ``failure``. A hedged launch adds the rest of its hedge group in
    ``hedged`` (plan order), with their tokens' sha256 in
    ``hedged_token_sha256`` (same order): one attempt each, all created
    with ``candidate``'s in the same transaction and sharing its hedge group.
    """

    plan: PlacementPlan
    candidate: Candidate | None = None
    token_sha256: str | None = None
    failure: str | None = None
    #: no candidate now, for a reason time can fix: the task waits with this queue reason ...
    wait: str | None = None
    #: ... and is not claimed again before this
    not_before: datetime | None = None
    hedged: tuple[Candidate, ...] = ()
    hedged_token_sha256: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RecordedDecision:
    """A task's first receipt as ``policy simulate`` replays it: the task, what was chosen, the signals seen."""

    task: Task
    decided_at: datetime
    policy_version: str
    #: the plan's first candidate (None: the plan had none)
    target: str | None
    provider: str | None
    expected_usd_h: float | None
    max_price_usd_h: float | None
    snapshot_id: str | None
    #: the snapshot JSON, loaded once per snapshot id in a chunk (batches share one)
    snapshot: Mapping[str, Any] | None
    #: how long the task ran, when it has finished
    runtime_seconds: float | None
    #: the free GPUs the decision read (``free_gpus/<target>`` -> value): the batch's snapshot less the
    #: slots its earlier launches took (docs/reliability.md, "Queueing")
    capacity_seen: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class FailoverResult:
    """What :meth:`Store.fail_over` did with a task whose attempt ended after launch."""

    task_id: str
    #: "requeued" (planned again once ``not_before`` has passed), "failed" (attempts used up), or
    #: None: nothing, because another caller already decided (or the task was cancelled or finished)
    outcome: str | None
    #: attempts of the task that ended by failover, this one included (0 when ``outcome`` is None)
    attempts: int = 0
    not_before: datetime | None = None
    #: this call ended the attempt (``outcome`` may still be None: a hedged sibling of it still runs)
    ended: bool = False


@dataclass(frozen=True, kw_only=True)
class RunningStart:
    """What :meth:`Store.start_running` decided for an attempt whose worker (or backend) says it runs.

    ``outcome``: "won" (it moved to running now: alone, or the first of its
    hedged launch), "running" (it already was: a repeated report), "lost"
    (a sibling of its hedged launch runs or succeeded, or the task ended:
    it was cancelled now) or "ended" (it had ended before).
    """

    outcome: str
    #: the attempt as it is after the decision
    attempt: Attempt
    #: the still-launching siblings that this win cancelled: their backend resources are to be stopped
    cancelled: tuple[Attempt, ...] = ()

    @property
    def running(self) -> bool:
        """Whether the attempt runs now, i.e. its worker may work."""
        return self.outcome in ("won", "running")


class FinishedAttempt(NamedTuple):
    """An attempt that became final, as :meth:`Store.finished_attempts_after` lists it."""

    event_id: int
    attempt_id: str
    provider: str
    #: the final state it reached (``cancelled`` for a hedge's losers: their resources are released everywhere)
    state: AttemptState


def _event_row(
    *,
    task_id: str,
    at: datetime,
    actor: str,
    kind: str,
    attempt_id: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "attempt_id": attempt_id,
        "at": at,
        "actor": actor,
        "kind": kind,
        "from_state": from_state,
        "to_state": to_state,
        "detail": dict(detail or {}),
    }


def _decision_rows(
    plan: PlacementPlan, *, decision_id: str, at: datetime, actor: str, snapshot_id: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The receipt's row and its ``decision.recorded`` event."""
    decision = {
        "id": decision_id,
        "task_id": plan.task_id,
        "policy_version": plan.policy_version,
        "decided_at": plan.decided_at,
        "plan": plan_to_json(plan),
        "snapshot_id": snapshot_id,
    }
    recorded = _event_row(
        task_id=plan.task_id,
        at=at,
        actor=actor,
        kind="decision.recorded",
        detail={
            "decision_id": decision_id,
            "policy_version": plan.policy_version,
            "candidates": [c.target for c in plan.candidates],
            "rejections": len(plan.rejections),
        },
    )
    return decision, recorded


def _attempt_rows(
    *,
    attempt_id: str,
    task_id: str,
    number: int,
    target: str,
    provider: str,
    region: str | None,
    instance_type: str | None,
    token_sha256: str,
    at: datetime,
    actor: str,
    hedge_group: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new launching attempt's row and its ``attempt.created`` event (naming its hedge group, if any)."""
    attempt = {
        "id": attempt_id,
        "task_id": task_id,
        "number": number,
        "target": target,
        "provider": provider,
        "region": region,
        "instance_type": instance_type,
        "state": AttemptState.LAUNCHING.value,
        "token_sha256": token_sha256,
        "created_at": at,
        "updated_at": at,
        "progress": {},
        "hedge_group": hedge_group,
    }
    detail: dict[str, Any] = {"number": number, "target": target, "provider": provider}
    if hedge_group is not None:
        detail["hedge_group"] = hedge_group
    created = _event_row(
        task_id=task_id,
        attempt_id=attempt_id,
        at=at,
        actor=actor,
        kind="attempt.created",
        to_state=AttemptState.LAUNCHING.value,
        detail=detail,
    )
    return attempt, created


def _launch_number(table: Any) -> Any:
    """Which launch an attempt belongs to: its hedge group (the first sibling's number), else its own number."""
    return func.coalesce(table.c.hedge_group, table.c.number)


def _launch_group(item: PlannedLaunch) -> list[tuple[Candidate, str]]:
    """The candidates an item launches (its own, then its hedged siblings) with their tokens' sha256, checked."""
    if item.candidate is None:
        return []
    if len(item.hedged) != len(item.hedged_token_sha256):
        raise ValueError("hedged and hedged_token_sha256 must name one token hash per hedged candidate")
    group = [(item.candidate, item.token_sha256), *zip(item.hedged, item.hedged_token_sha256, strict=True)]
    checked: list[tuple[Candidate, str]] = []
    for candidate, token_sha256 in group:
        if token_sha256 is None or not _SHA256_HEX.match(token_sha256):
            raise ValueError("token_sha256 must be 64 lowercase hex characters (the token's sha256)")
        checked.append((candidate, token_sha256))
    return checked


def _capacity_seen(signals_used: Any) -> dict[str, float]:
    """The ``free_gpus/...`` values a stored plan read, from its ``signals_used`` (anything else ignored)."""
    if not isinstance(signals_used, dict):
        return {}
    seen: dict[str, float] = {}
    for name, used in signals_used.items():
        value = used.get("value") if isinstance(used, dict) else None
        if name.startswith("free_gpus/") and isinstance(value, int | float) and not isinstance(value, bool):
            seen[name] = float(value)
    return seen


def _waiting_update(item: PlannedLaunch, row: Row[Any], *, now: datetime) -> dict[str, Any]:
    """The task row's new queue fields when it goes on waiting (its wait began at its first waiting plan)."""
    return {
        "b_id": item.plan.task_id,
        "queue_reason": item.wait,
        "queued_since": row.queued_since or now,
        "not_before": item.not_before,
    }


def _waiting_event(item: PlannedLaunch, row: Row[Any], *, at: datetime, actor: str) -> dict[str, Any]:
    """``task.waiting``: the task went back to ``queued`` with a new queue reason (written only on a change)."""
    return _event_row(
        task_id=item.plan.task_id,
        at=at,
        actor=actor,
        kind="task.waiting",
        from_state=TaskState.PLANNED.value,
        to_state=TaskState.QUEUED.value,
        detail={
            "reason": item.wait,
            "previous": row.queue_reason,
            "queued_since": (row.queued_since or at).isoformat(),
            "not_before": item.not_before.isoformat() if item.not_before is not None else None,
        },
    )


class Store:
    """The control plane's state, one short transaction per call."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self._clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time. Threads of this process queue on a lock
        # instead of racing for BEGIN IMMEDIATE and falling into SQLite's busy
        # handler, whose sleeps made tail latency explode under concurrent submits.
        # Other processes still meet busy_timeout as before.
        self._write_lock: AbstractContextManager[Any] = nullcontext() if self._postgres else threading.Lock()
        #: set on the copy a leading scheduler writes through (:meth:`fenced`); None: writes are not fenced
        self._fence: Fence | None = None
        #: monotonic time of the last check of the fence that passed
        self._fence_checked = 0.0

    def fenced(self, fence: Fence) -> Store:
        """This store, with every write first checking that ``fence`` still holds (controlplane.store.lease).

        The copy shares the engine and, on SQLite, the writer lock; the
        API's store stays unfenced (submissions and workers' callbacks are
        not scheduling decisions).
        """
        view = copy.copy(self)
        view._fence = fence
        return view

    @property
    def fence(self) -> Fence | None:
        return self._fence

    def check_fence(self, *, max_age_s: float = 0.0) -> None:
        """Raise ``Fenced`` if this store's fence no longer holds (a read; no-op when unfenced).

        For the moment between a fenced write and a call outside the
        database, such as a launch: a deposed leader stops before it sends.
        With ``max_age_s``, a check (or fenced write) that passed less than
        that long ago is taken as still good, so a batch of launches costs
        one read per interval rather than one per launch.
        """
        if self._fence is None:
            return
        if max_age_s > 0 and time.monotonic() - self._fence_checked < max_age_s:
            return
        with self._read() as conn:
            self._fence.check(conn, postgres=False)
        self._fence_checked = time.monotonic()

    @property
    def engine(self) -> Engine:
        return self._engine

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the store's clock must return timezone-aware datetimes")
        return now

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_lock, self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                if self._fence is not None:
                    self._fence.check(conn, postgres=self._postgres)
                    self._fence_checked = time.monotonic()
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def _locked(self, stmt: Select[Any]) -> Select[Any]:
        return stmt.with_for_update() if self._postgres else stmt

    @staticmethod
    def _event(conn: Connection, **fields: Any) -> None:
        """Insert one event row (fields as :func:`_event_row` takes them)."""
        conn.execute(insert(events).values(**_event_row(**fields)))

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
        if not batch:
            return []
        try:
            with self._write() as conn:
                return self._insert_tasks(conn, batch)
        except IntegrityError:
            if len(batch) > 1:
                return [outcome for item in batch for outcome in self.create_tasks([item])]
            (item,) = batch
            if item.idempotency_key is None:
                raise
            # another request with the same key won the race: answer as if we had come second
            with self._read() as conn:
                winner = self._keyed(conn, item.spec.tenant, [item.idempotency_key]).get(
                    (item.spec.tenant, item.idempotency_key)
                )
            if winner is None:
                raise
            return [_replay(item, winner)]

    def task_for_key(self, *, tenant: str, idempotency_key: str) -> tuple[Task, str] | None:
        """The task a tenant stored under ``idempotency_key`` and its request hash; None for a new key."""
        with self._read() as conn:
            row = self._keyed(conn, tenant, [idempotency_key]).get((tenant, idempotency_key))
        return None if row is None else (_task(row), str(row.request_hash))

    @staticmethod
    def _keyed(conn: Connection, tenant: str, keys: list[str]) -> dict[tuple[str, str], Row[Any]]:
        rows = conn.execute(select(tasks).where(tasks.c.tenant == tenant, tasks.c.idempotency_key.in_(keys))).all()
        return {(r.tenant, r.idempotency_key): r for r in rows}

    def _insert_tasks(
        self, conn: Connection, batch: Sequence[NewTask]
    ) -> list[tuple[Task, bool] | IdempotencyConflict]:
        now = self._now()
        stored: dict[tuple[str, str], Row[Any]] = {}
        keys_by_tenant: dict[str, list[str]] = {}
        for item in batch:
            if item.idempotency_key is not None:
                keys_by_tenant.setdefault(item.spec.tenant, []).append(item.idempotency_key)
        for tenant, keys in keys_by_tenant.items():
            stored.update(self._keyed(conn, tenant, keys))
        in_batch: dict[tuple[str, str], tuple[Task, str]] = {}  # key -> (task, request hash)
        outcomes: list[tuple[Task, bool] | IdempotencyConflict] = []
        rows: list[dict[str, Any]] = []
        created: list[dict[str, Any]] = []
        for item in batch:
            key = (item.spec.tenant, item.idempotency_key) if item.idempotency_key is not None else None
            if key is not None and key in stored:
                outcomes.append(_replay(item, stored[key]))
            elif key is not None and key in in_batch:
                earlier, request_hash = in_batch[key]
                outcomes.append(
                    (earlier, False)
                    if request_hash == item.request_hash
                    else IdempotencyConflict(tenant=key[0], idempotency_key=key[1], task_id=earlier.id)
                )
            else:
                task_id = new_id("tsk", now_ms=_ms(now))
                rows.append(_task_row(item, task_id, now))
                created.append(
                    _event_row(task_id=task_id, at=now, actor=item.actor, kind="task.created", to_state="queued")
                )
                # exactly the row just written, so no read-back round trip
                task = Task(id=task_id, spec=item.spec, state=TaskState.QUEUED, created_at=now, updated_at=now)
                outcomes.append((task, True))
                if key is not None:
                    in_batch[key] = (task, item.request_hash)
        if rows:
            conn.execute(insert(tasks), rows)
            conn.execute(insert(events), created)
        return outcomes

    def get_task(self, task_id: str) -> Task:
        """The task, or :class:`NotFound`."""
        with self._read() as conn:
            row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one_or_none()
        if row is None:
            raise NotFound("task", task_id)
        return _task(row)

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
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, not {limit}")
        stmt = select(tasks)
        if state is not None:
            stmt = stmt.where(tasks.c.state == state.value)
        if priority is not None:
            stmt = stmt.where(tasks.c.priority == priority.value)
        if data_sensitivity is not None:
            stmt = stmt.where(tasks.c.data_sensitivity == data_sensitivity.value)
        if target is not None:
            stmt = stmt.where(tasks.c.target == target)
        if tenant is not None:
            stmt = stmt.where(tasks.c.tenant == tenant)
        if created_after is not None:
            stmt = stmt.where(tasks.c.created_at >= created_after)
        if created_before is not None:
            stmt = stmt.where(tasks.c.created_at < created_before)
        if cursor is not None:
            stmt = stmt.where(tasks.c.id < cursor if newest_first else tasks.c.id > cursor)
        stmt = stmt.order_by(tasks.c.id.desc() if newest_first else tasks.c.id.asc()).limit(limit + 1)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        page = [_task(r) for r in rows[:limit]]
        return page, (page[-1].id if len(rows) > limit else None)

    def retarget_task(self, task_id: str, *, target: str, actor: str) -> bool:
        """Point a launching task at the target of its new attempt (failover); False if it left launching.

        The state does not change, so this is not a transition; the event
        (``task.retargeted``, from and to) keeps the chain readable.
        """
        now = self._now()
        with self._write() as conn:
            row = conn.execute(
                self._locked(select(tasks.c.state, tasks.c.target).where(tasks.c.id == task_id))
            ).one_or_none()
            if row is None:
                raise NotFound("task", task_id)
            if row.state != TaskState.LAUNCHING.value:
                return False
            conn.execute(update(tasks).where(tasks.c.id == task_id).values(target=target, updated_at=now))
            conn.execute(
                insert(events).values(
                    **_event_row(
                        task_id=task_id,
                        at=now,
                        actor=actor,
                        kind="task.retargeted",
                        detail={"from": row.target, "to": target},
                    )
                )
            )
        return True

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
        now = self._now()
        with self._write() as conn:
            row = conn.execute(self._locked(select(tasks).where(tasks.c.id == task_id))).one_or_none()
            if row is None:
                raise NotFound("task", task_id)
            current = TaskState(row.state)
            if expected is not None and current != expected:
                raise StateMismatch("task", task_id, expected=expected.value, actual=current.value)
            check_task_transition(current, wanted)
            values: dict[str, Any] = {"state": wanted.value, "updated_at": now}
            if reason is not None:
                values["reason"] = reason
            if target is not None:
                values["target"] = target
            if wanted is TaskState.PLANNED:
                values["planned_at"] = now
            elif wanted is TaskState.QUEUED:
                values["claimed_by"] = None
                values["claimed_at"] = None
            elif wanted is TaskState.RUNNING and row.started_at is None:
                values["started_at"] = now
            if wanted.is_final:
                values["finished_at"] = now
            if wanted.is_final or wanted is TaskState.LAUNCHING:
                values.update(queue_reason=None, queued_since=None)  # it waits no longer
            conn.execute(update(tasks).where(tasks.c.id == task_id).values(**values))
            event_detail = dict(detail or {})
            if reason is not None:
                event_detail.setdefault("reason", reason)
            if target is not None:
                event_detail.setdefault("target", target)
            self._event(
                conn,
                task_id=task_id,
                at=now,
                actor=actor,
                kind="task.transition",
                from_state=current.value,
                to_state=wanted.value,
                detail=event_detail,
            )
            updated = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
        return _task(updated)

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
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        now = self._now()
        pick = (
            select(tasks.c.id, tasks.c.queue_reason)
            .where(
                tasks.c.state == TaskState.QUEUED.value,
                # the index walk stays (state, priority_rank, id); backing-off rows are few and skipped
                or_(tasks.c.not_before.is_(None), tasks.c.not_before <= now),
            )
            .order_by(tasks.c.priority_rank, tasks.c.id)
            .limit(batch_size)
        )
        if self._postgres:
            pick = pick.with_for_update(skip_locked=True)
        with self._write() as conn:
            picked = conn.execute(pick).all()
            if not picked:
                return []
            ids = [r.id for r in picked]
            first_claims = [r.id for r in picked if r.queue_reason is None]
            conn.execute(
                update(tasks)
                .where(tasks.c.id.in_(ids), tasks.c.state == TaskState.QUEUED.value)
                .values(
                    state=TaskState.PLANNED.value,
                    planned_at=now,
                    updated_at=now,
                    claimed_by=scheduler_id,
                    claimed_at=now,
                )
            )
            if first_claims:
                conn.execute(
                    insert(events),
                    [
                        {
                            "task_id": task_id,
                            "attempt_id": None,
                            "at": now,
                            "actor": scheduler_id,
                            "kind": "task.claimed",
                            "from_state": TaskState.QUEUED.value,
                            "to_state": TaskState.PLANNED.value,
                            "detail": {},
                        }
                        for task_id in first_claims
                    ],
                )
            rows = conn.execute(
                select(tasks).where(tasks.c.id.in_(ids)).order_by(tasks.c.priority_rank, tasks.c.id)
            ).all()
        return [_task(r) for r in rows]

    def count_tasks_by_state(self) -> dict[TaskState, int]:
        """How many tasks are in each state (every state present, zero included)."""
        with self._read() as conn:
            rows = conn.execute(select(tasks.c.state, func.count()).group_by(tasks.c.state)).all()
        counts = dict.fromkeys(TaskState, 0)
        for state, count in rows:
            counts[TaskState(state)] = int(count)
        return counts

    # -- decisions (receipts) --------------------------------------------------------------------

    def record_decision(self, *, plan: PlacementPlan, actor: str = "scheduler") -> str:
        """Store a placement plan as the task's newest receipt; returns the decision id."""
        now = self._now()
        decision_id = new_id("dec", now_ms=_ms(now))
        with self._write() as conn:
            if conn.execute(select(tasks.c.id).where(tasks.c.id == plan.task_id)).one_or_none() is None:
                raise NotFound("task", plan.task_id)
            decision, recorded = _decision_rows(plan, decision_id=decision_id, at=now, actor=actor)
            conn.execute(insert(decisions).values(**decision))
            conn.execute(insert(events).values(**recorded))
        return decision_id

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
        if not launches:
            return []
        now = self._now()
        task_ids = [item.plan.task_id for item in launches]
        attempt_rows: list[dict[str, Any]] = []
        task_updates: list[dict[str, Any]] = []
        event_rows: list[dict[str, Any]] = []
        results: list[list[str]] = []
        with self._write() as conn:
            found = {
                r.id: r
                for r in conn.execute(
                    self._locked(
                        select(tasks.c.id, tasks.c.state, tasks.c.queue_reason, tasks.c.queued_since).where(
                            tasks.c.id.in_(task_ids)
                        )
                    )
                )
            }
            states = {task_id: r.state for task_id, r in found.items()}
            missing = [task_id for task_id in task_ids if task_id not in states]
            if missing:
                raise NotFound("task", missing[0])
            numbers: dict[str, int] = {
                task_id: number
                for task_id, number in conn.execute(
                    select(attempts.c.task_id, func.max(attempts.c.number))
                    .where(attempts.c.task_id.in_(task_ids))
                    .group_by(attempts.c.task_id)
                )
            }
            snapshot_id = new_id("snp", now_ms=_ms(now)) if snapshot is not None else None
            decision_rows = []
            waiting: list[dict[str, Any]] = []
            for item in launches:
                task_id, plan = item.plan.task_id, item.plan
                row = found[task_id]
                # a task that goes on waiting for the same reason gets no new receipt: re-planning hundreds
                # of waiting tasks each round must not write hundreds of receipts (docs/reliability.md)
                unchanged = (
                    item.candidate is None
                    and item.wait is not None
                    and item.wait == row.queue_reason
                    and states[task_id] == TaskState.PLANNED.value
                )
                if not unchanged:
                    decision, recorded = _decision_rows(
                        plan, decision_id=new_id("dec", now_ms=_ms(now)), at=now, actor=actor, snapshot_id=snapshot_id
                    )
                    decision_rows.append(decision)
                    event_rows.append(recorded)
                if states[task_id] != TaskState.PLANNED.value:
                    results.append([])
                    continue
                states[task_id] = "taken"  # a task repeated in the batch gets one launch
                candidate = item.candidate
                if candidate is None:
                    if item.wait is not None:
                        waiting.append(_waiting_update(item, row, now=now))
                        if not unchanged:
                            event_rows.append(_waiting_event(item, row, at=now, actor=actor))
                    else:
                        reason = item.failure or "no placement"
                        task_updates.append(
                            {"b_id": task_id, "state": TaskState.FAILED.value, "reason": reason, "finished_at": now}
                        )
                        event_rows.append(
                            _event_row(
                                task_id=task_id,
                                at=now,
                                actor=actor,
                                kind="task.transition",
                                from_state=TaskState.PLANNED.value,
                                to_state=TaskState.FAILED.value,
                                detail={"reason": reason},
                            )
                        )
                    results.append([])
                    continue
                group = _launch_group(item)
                first_number = numbers.get(task_id, 0) + 1
                hedge_group = first_number if len(group) > 1 else None
                started: list[str] = []
                for offset, (member, token_sha256) in enumerate(group):
                    attempt_id = new_id("att", now_ms=_ms(now))
                    attempt, created = _attempt_rows(
                        attempt_id=attempt_id,
                        task_id=task_id,
                        number=first_number + offset,
                        target=member.target,
                        provider=member.provider,
                        region=member.region,
                        instance_type=member.instance_type,
                        token_sha256=token_sha256,
                        at=now,
                        actor=actor,
                        hedge_group=hedge_group,
                    )
                    attempt_rows.append(attempt)
                    event_rows.append(created)
                    started.append(attempt_id)
                task_updates.append({"b_id": task_id, "state": TaskState.LAUNCHING.value, "target": candidate.target})
                event_rows.append(
                    _event_row(
                        task_id=task_id,
                        at=now,
                        actor=actor,
                        kind="task.transition",
                        from_state=TaskState.PLANNED.value,
                        to_state=TaskState.LAUNCHING.value,
                        detail={"target": candidate.target},
                    )
                )
                results.append(started)
            if decision_rows:
                if snapshot is not None:  # stored only when a receipt names it (not for a batch of unchanged waits)
                    conn.execute(
                        insert(signal_snapshots).values(
                            id=snapshot_id, taken_at=snapshot[0], document=dict(snapshot[1])
                        )
                    )
                conn.execute(insert(decisions), decision_rows)
            if attempt_rows:
                conn.execute(insert(attempts), attempt_rows)
            launching = [u for u in task_updates if u["state"] == TaskState.LAUNCHING.value]
            failed = [u for u in task_updates if u["state"] == TaskState.FAILED.value]
            # placed or failed: no longer waiting
            not_waiting = {"queue_reason": None, "queued_since": None, "not_before": None, "updated_at": now}
            if launching:
                conn.execute(
                    update(tasks).where(tasks.c.id == bindparam("b_id")).values(**not_waiting),
                    [{"b_id": u["b_id"], "state": u["state"], "target": u["target"]} for u in launching],
                )
            if failed:
                conn.execute(
                    update(tasks).where(tasks.c.id == bindparam("b_id")).values(**not_waiting),
                    [{k: u[k] for k in ("b_id", "state", "reason", "finished_at")} for u in failed],
                )
            if waiting:
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id == bindparam("b_id"))
                    .values(state=TaskState.QUEUED.value, claimed_by=None, claimed_at=None, updated_at=now),
                    waiting,
                )
            if event_rows:
                conn.execute(insert(events), event_rows)
            new_ids = [a for started in results for a in started]
            stored = (
                {r.id: _attempt(r) for r in conn.execute(select(attempts).where(attempts.c.id.in_(new_ids)))}
                if new_ids
                else {}
            )
        return [tuple(stored[a] for a in started) for started in results]

    def record_backend_refs(self, refs: Mapping[str, str]) -> None:
        """Record the provider's handle of each launched attempt (attempt id -> backend ref) at once."""
        if not refs:
            return
        now = self._now()
        with self._write() as conn:
            conn.execute(
                update(attempts).where(attempts.c.id == bindparam("b_id")).values(updated_at=now),
                [{"b_id": attempt_id, "backend_ref": ref} for attempt_id, ref in refs.items()],
            )

    def get_decisions(self, task_id: str) -> list[PlacementPlan]:
        """Every plan made for the task, oldest first (failover appends one per planning)."""
        with self._read() as conn:
            documents = conn.execute(
                select(decisions.c.plan).where(decisions.c.task_id == task_id).order_by(decisions.c.id)
            ).scalars()
            return [plan_from_json(d) for d in documents]

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
    ) -> Attempt:
        """A new launching attempt numbered after the task's previous one.

        ``token_sha256`` is the hex sha256 of the attempt's callback token;
        the token itself never reaches the database.
        """
        if not _SHA256_HEX.match(token_sha256):
            raise ValueError("token_sha256 must be 64 lowercase hex characters (the token's sha256)")
        now = self._now()
        attempt_id = new_id("att", now_ms=_ms(now))
        with self._write() as conn:
            # lock the task so concurrent creations number one after the other
            if conn.execute(self._locked(select(tasks.c.id).where(tasks.c.id == task_id))).one_or_none() is None:
                raise NotFound("task", task_id)
            previous = conn.execute(
                select(func.max(attempts.c.number)).where(attempts.c.task_id == task_id)
            ).scalar_one()
            number = (previous or 0) + 1
            attempt, created = _attempt_rows(
                attempt_id=attempt_id,
                task_id=task_id,
                number=number,
                target=target,
                provider=provider,
                region=region,
                instance_type=instance_type,
                token_sha256=token_sha256,
                at=now,
                actor=actor,
            )
            conn.execute(insert(attempts).values(**attempt))
            conn.execute(insert(events).values(**created))
            row = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).one()
        return _attempt(row)

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
        now = self._now()
        with self._write() as conn:
            row = conn.execute(self._locked(select(attempts).where(attempts.c.id == attempt_id))).one_or_none()
            if row is None:
                raise NotFound("attempt", attempt_id)
            current = AttemptState(row.state)
            if expected is not None and current != expected:
                raise StateMismatch("attempt", attempt_id, expected=expected.value, actual=current.value)
            check_attempt_transition(current, wanted)
            values: dict[str, Any] = {"state": wanted.value, "updated_at": now}
            detail: dict[str, Any] = {}
            for name, value in (("reason", reason), ("exit_code", exit_code), ("backend_ref", backend_ref)):
                if value is not None:
                    values[name] = detail[name] = value
            self._write_attempt_transition(
                conn, row, current, wanted, values=values, detail=detail, at=now, actor=actor
            )
            updated = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).one()
        return _attempt(updated)

    def _write_attempt_transition(
        self,
        conn: Connection,
        row: Row[Any],
        current: AttemptState,
        wanted: AttemptState,
        *,
        values: Mapping[str, Any],
        detail: Mapping[str, Any],
        at: datetime,
        actor: str,
    ) -> None:
        """The attempt's new row values and its ``attempt.transition`` event (the caller checked the move)."""
        conn.execute(update(attempts).where(attempts.c.id == row.id).values(**values))
        self._event(
            conn,
            task_id=row.task_id,
            attempt_id=row.id,
            at=at,
            actor=actor,
            kind="attempt.transition",
            from_state=current.value,
            to_state=wanted.value,
            detail=detail,
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
        now = self._now()
        live_or_won = (AttemptState.RUNNING.value, AttemptState.SUCCEEDED.value)
        with self._write() as conn:
            task_id = conn.execute(select(attempts.c.task_id).where(attempts.c.id == attempt_id)).scalar_one_or_none()
            if task_id is None:
                raise NotFound("attempt", attempt_id)
            task = conn.execute(
                self._locked_no_key(select(tasks.c.state, tasks.c.started_at).where(tasks.c.id == task_id))
            ).one()
            rows = conn.execute(
                self._locked_no_key(select(attempts).where(attempts.c.task_id == task_id).order_by(attempts.c.number))
            ).all()
            row = next(r for r in rows if r.id == attempt_id)
            state = AttemptState(row.state)
            if state is not AttemptState.LAUNCHING:
                return RunningStart(outcome="ended" if state.is_final else "running", attempt=_attempt(row))
            rival = next((r for r in rows if r.id != attempt_id and r.state in live_or_won), None)
            task_state = TaskState(task.state)
            hedged = row.hedge_group is not None
            if rival is not None or (hedged and task_state.is_final):
                # a hedged worker waits for this answer before any work, so it never writes a second output
                if rival is None:
                    reason = f"the task {task_state.value} first"
                else:  # never for an attempt launched alone: one live attempt per task
                    reason = f"hedge lost to {rival.id}" if hedged else f"attempt {rival.id} of the task runs already"
                self._cancel_launching(
                    conn, row, reason=reason, winner=rival.id if rival else None, at=now, actor=actor
                )
                lost = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).one()
                return RunningStart(outcome="lost", attempt=_attempt(lost))
            detail: dict[str, Any] = {"hedge_group": row.hedge_group} if hedged else {}
            self._write_attempt_transition(
                conn,
                row,
                AttemptState.LAUNCHING,
                AttemptState.RUNNING,
                values={"state": AttemptState.RUNNING.value, "updated_at": now},
                detail=detail,
                at=now,
                actor=actor,
            )
            losers = [
                r
                for r in rows
                if hedged
                and r.id != attempt_id
                and r.hedge_group == row.hedge_group
                and r.state == AttemptState.LAUNCHING.value
            ]
            for loser in losers:
                self._cancel_launching(
                    conn, loser, reason=f"hedge lost to {attempt_id}", winner=attempt_id, at=now, actor=actor
                )
            if task_state is TaskState.LAUNCHING:
                self._task_running(
                    conn, task_id, started=task.started_at, target=row.target if hedged else None, at=now, actor=actor
                )
            changed = [attempt_id, *(r.id for r in losers)]
            after = {r.id: _attempt(r) for r in conn.execute(select(attempts).where(attempts.c.id.in_(changed)))}
        return RunningStart(outcome="won", attempt=after[attempt_id], cancelled=tuple(after[r.id] for r in losers))

    def _locked_no_key(self, stmt: Select[Any]) -> Select[Any]:
        """``_locked`` as FOR NO KEY UPDATE on PostgreSQL, for rows locked before other rows.

        That is the lock an UPDATE of non-key columns takes anyway, and it
        lets another transaction insert an event naming the row (the foreign
        key check share-locks it): ``transition_attempt`` locks an attempt,
        then inserts its event; with FOR UPDATE here, the task row locked
        first would make the two wait on each other.
        """
        return stmt.with_for_update(key_share=True) if self._postgres else stmt

    def _cancel_launching(
        self, conn: Connection, row: Row[Any], *, reason: str, winner: str | None, at: datetime, actor: str
    ) -> None:
        """A launching attempt that will never run (a hedge it lost): cancelled, with the reason and the winner."""
        detail: dict[str, Any] = {"reason": reason}
        if winner is not None:
            detail["hedge_winner"] = winner
        self._write_attempt_transition(
            conn,
            row,
            AttemptState.LAUNCHING,
            AttemptState.CANCELLED,
            values={"state": AttemptState.CANCELLED.value, "updated_at": at, "reason": reason},
            detail=detail,
            at=at,
            actor=actor,
        )

    def _task_running(
        self, conn: Connection, task_id: str, *, started: datetime | None, target: str | None, at: datetime, actor: str
    ) -> None:
        """A launching task to running (its first start time kept), on ``target`` when given (a hedge's winner)."""
        check_task_transition(TaskState.LAUNCHING, TaskState.RUNNING)
        values: dict[str, Any] = {"state": TaskState.RUNNING.value, "updated_at": at}
        if started is None:
            values["started_at"] = at
        detail: dict[str, Any] = {}
        if target is not None:
            values["target"] = detail["target"] = target
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(**values))
        self._event(
            conn,
            task_id=task_id,
            at=at,
            actor=actor,
            kind="task.transition",
            from_state=TaskState.LAUNCHING.value,
            to_state=TaskState.RUNNING.value,
            detail=detail,
        )

    def set_backend_ref(self, attempt_id: str, *, backend_ref: str) -> Attempt:
        """Record the provider's handle for a launched attempt without changing its state."""
        now = self._now()
        with self._write() as conn:
            result = conn.execute(
                update(attempts).where(attempts.c.id == attempt_id).values(backend_ref=backend_ref, updated_at=now)
            )
            if result.rowcount == 0:
                raise NotFound("attempt", attempt_id)
            row = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).one()
        return _attempt(row)

    def get_attempt(self, attempt_id: str) -> Attempt:
        """The attempt, or :class:`NotFound`."""
        with self._read() as conn:
            row = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).one_or_none()
        if row is None:
            raise NotFound("attempt", attempt_id)
        return _attempt(row)

    def attempts_for(self, task_id: str) -> list[Attempt]:
        """The task's attempts, first to last."""
        with self._read() as conn:
            rows = conn.execute(select(attempts).where(attempts.c.task_id == task_id).order_by(attempts.c.number)).all()
        return [_attempt(r) for r in rows]

    def last_event_id(self) -> int:
        """The newest event's id (0 when there is none): where a cursor over later events starts."""
        with self._read() as conn:
            return int(conn.execute(select(func.max(events.c.id))).scalar_one() or 0)

    def finished_attempts_after(self, event_id: int, *, limit: int = 500) -> list[FinishedAttempt]:
        """Attempts that became final after ``event_id`` (event id, attempt id, provider, state), oldest first."""
        final = [state.value for state in AttemptState if state.is_final]
        stmt = (
            select(events.c.id, events.c.attempt_id, attempts.c.provider, events.c.to_state)
            .join(attempts, attempts.c.id == events.c.attempt_id)
            .where(events.c.id > event_id, events.c.kind == "attempt.transition", events.c.to_state.in_(final))
            .order_by(events.c.id)
            .limit(limit)
        )
        with self._read() as conn:
            return [
                FinishedAttempt(int(r.id), str(r.attempt_id), str(r.provider), AttemptState(r.to_state))
                for r in conn.execute(stmt)
            ]

    def live_attempts(self, *, limit: int = 1000) -> list[Attempt]:
        """Attempts still launching or running, oldest first: what the scheduler follows."""
        live = (AttemptState.LAUNCHING.value, AttemptState.RUNNING.value)
        with self._read() as conn:
            rows = conn.execute(
                select(attempts).where(attempts.c.state.in_(live)).order_by(attempts.c.created_at).limit(limit)
            ).all()
        return [_attempt(r) for r in rows]

    def last_heartbeats(self, attempt_ids: Sequence[str]) -> dict[str, datetime | None]:
        """When each attempt's worker last called in (None: never); unknown ids are left out."""
        found: dict[str, datetime | None] = {}
        ids = list(dict.fromkeys(attempt_ids))
        with self._read() as conn:
            # in chunks: one IN list per 500 ids stays far below every database's parameter limit
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(select(attempts.c.id, attempts.c.last_heartbeat_at).where(attempts.c.id.in_(chunk)))
                found.update({r.id: r.last_heartbeat_at for r in rows})
        return found

    def attempts_awaiting_failover(self, *, limit: int = 500) -> list[Attempt]:
        """Ended attempts whose task still waits on them: the worker's callback ended them, nobody failed over.

        The newest attempt of each launching or running task with no live
        attempt (every attempt of the newest launch, when it was hedged),
        when it ended preempted, lost, or failed with an exit code (the
        caller decides which endings are retryable). Oldest ending first.
        """
        later = aliased(attempts)
        live = (AttemptState.LAUNCHING.value, AttemptState.RUNNING.value)
        # by launch, not by attempt: the ended siblings of a hedged launch all wait here once none is live,
        # and the first one failed over re-queues the task (the others then find it moved on)
        superseded = (
            select(later.c.id)
            .where(
                later.c.task_id == attempts.c.task_id,
                or_(_launch_number(later) > _launch_number(attempts), later.c.state.in_(live)),
            )
            .exists()
        )
        stmt = (
            select(attempts)
            .join(tasks, tasks.c.id == attempts.c.task_id)
            .where(
                tasks.c.state.in_((TaskState.LAUNCHING.value, TaskState.RUNNING.value)),
                or_(
                    attempts.c.state.in_((AttemptState.PREEMPTED.value, AttemptState.LOST.value)),
                    and_(attempts.c.state == AttemptState.FAILED.value, attempts.c.exit_code.is_not(None)),
                ),
                ~superseded,
            )
            .order_by(attempts.c.updated_at)
            .limit(limit)
        )
        with self._read() as conn:
            return [_attempt(r) for r in conn.execute(stmt)]

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
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        now = self._now()
        with self._write() as conn:
            task_id = conn.execute(select(attempts.c.task_id).where(attempts.c.id == attempt_id)).scalar_one_or_none()
            if task_id is None:
                raise NotFound("attempt", attempt_id)
            # the task first, then the attempt: start_running locks in this order too (no deadlock between them)
            task = conn.execute(self._locked_no_key(select(tasks.c.state).where(tasks.c.id == task_id))).one()
            row = conn.execute(self._locked(select(attempts).where(attempts.c.id == attempt_id))).one()
            nothing = FailoverResult(task_id=row.task_id, outcome=None)
            state, code = AttemptState(row.state), row.exit_code
            if not state.is_final:
                if ended is None or not ended.is_final:
                    raise ValueError("a live attempt can only be failed over into a final state")
                check_attempt_transition(state, ended)
                values: dict[str, Any] = {"state": ended.value, "updated_at": now, "reason": reason}
                detail: dict[str, Any] = {"reason": reason, "trigger": trigger}
                if exit_code is not None:
                    values["exit_code"] = detail["exit_code"] = exit_code
                self._write_attempt_transition(
                    conn, row, state, ended, values=values, detail=detail, at=now, actor=actor
                )
                state, code = ended, exit_code if exit_code is not None else code
                nothing = FailoverResult(task_id=row.task_id, outcome=None, ended=True)
            elif not retryable(state, code):
                return nothing
            task_state = TaskState(task.state)
            if task_state not in (TaskState.LAUNCHING, TaskState.RUNNING):
                return nothing  # cancelled, finished, or already sent back by someone else
            # siblings of a hedged launch share its group: they are not newer, and the last of them to end
            # (no live one beside it) fails the task over, once for the whole launch
            own_group = row.hedge_group if row.hedge_group is not None else row.number
            others = conn.execute(
                select(func.count())
                .select_from(attempts)
                .where(
                    attempts.c.task_id == row.task_id,
                    or_(
                        _launch_number(attempts) > own_group,
                        attempts.c.state.in_((AttemptState.LAUNCHING.value, AttemptState.RUNNING.value)),
                    ),
                )
            ).scalar_one()
            if others:
                return nothing  # a newer launch exists (this ending was acted on), or a sibling still runs
            used = (
                1
                + conn.execute(
                    select(func.count())
                    .select_from(events)
                    .where(events.c.task_id == row.task_id, events.c.kind == "attempt.failover")
                ).scalar_one()
            )
            why = f"{trigger}: {reason}"
            not_before: datetime | None = None
            if used >= max_attempts:
                outcome, wanted = "failed", TaskState.FAILED
                task_reason = f"max attempts reached ({used} of {max_attempts}); last: {why}"
                check_task_transition(task_state, wanted)
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id == row.task_id)
                    .values(state=wanted.value, reason=task_reason, finished_at=now, updated_at=now)
                )
                task_detail: dict[str, Any] = {"reason": task_reason, "trigger": trigger}
            else:
                outcome, wanted = "requeued", TaskState.QUEUED
                not_before = now + timedelta(seconds=backoff_seconds(used))
                check_task_transition(task_state, wanted)
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id == row.task_id)
                    # a queued task runs nowhere: the next plan chooses the target again
                    .values(
                        state=wanted.value,
                        target=None,
                        not_before=not_before,
                        claimed_by=None,
                        claimed_at=None,
                        updated_at=now,
                    )
                )
                task_detail = {"reason": why, "trigger": trigger, "not_before": not_before.isoformat()}
            self._event(
                conn,
                task_id=row.task_id,
                attempt_id=attempt_id,
                at=now,
                actor=actor,
                kind="attempt.failover",
                detail={
                    "trigger": trigger,
                    "reason": reason,
                    "attempt_state": state.value,
                    "exit_code": code,
                    "attempts": used,
                    "max_attempts": max_attempts,
                    "outcome": outcome,
                    "not_before": not_before.isoformat() if not_before is not None else None,
                },
            )
            self._event(
                conn,
                task_id=row.task_id,
                at=now,
                actor=actor,
                kind="task.transition",
                from_state=task_state.value,
                to_state=wanted.value,
                detail=task_detail,
            )
        return FailoverResult(task_id=row.task_id, outcome=outcome, attempts=used, not_before=not_before)

    def attempt_token_sha256(self, attempt_id: str) -> str:
        """The stored hash of the attempt's callback token (compare with ``hmac.compare_digest``)."""
        with self._read() as conn:
            value = conn.execute(
                select(attempts.c.token_sha256).where(attempts.c.id == attempt_id)
            ).scalar_one_or_none()
        if value is None:
            raise NotFound("attempt", attempt_id)
        return str(value)

    def record_heartbeat(self, attempt_id: str, *, progress: Mapping[str, Any] | None = None) -> Attempt:
        """Note that the attempt's worker called in, replacing its progress when given.

        A heartbeat for an attempt that already ended changes nothing; the
        returned attempt shows its final state.
        """
        now = self._now()
        values: dict[str, Any] = {"last_heartbeat_at": now}
        if progress is not None:
            values["progress"] = dict(progress)
        live = [AttemptState.LAUNCHING.value, AttemptState.RUNNING.value]
        with self._write() as conn:
            conn.execute(
                update(attempts).where(attempts.c.id == attempt_id, attempts.c.state.in_(live)).values(**values)
            )
            row = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).one_or_none()
        if row is None:
            raise NotFound("attempt", attempt_id)
        return _attempt(row)

    def get_progress(self, attempt_id: str) -> AttemptProgress:
        """When the attempt's worker last called in, and the progress it reported."""
        with self._read() as conn:
            row = conn.execute(
                select(attempts.c.last_heartbeat_at, attempts.c.progress).where(attempts.c.id == attempt_id)
            ).one_or_none()
        if row is None:
            raise NotFound("attempt", attempt_id)
        return AttemptProgress(
            attempt_id=attempt_id, last_heartbeat_at=row.last_heartbeat_at, progress=dict(row.progress or {})
        )

    # -- events --------------------------------------------------------------------------------

    def list_events(self, task_id: str, *, after_id: int | None = None, limit: int | None = None) -> list[Event]:
        """The task's events in the order they happened (``after_id`` for polling)."""
        stmt = select(events).where(events.c.task_id == task_id)
        if after_id is not None:
            stmt = stmt.where(events.c.id > after_id)
        stmt = stmt.order_by(events.c.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [_event(r) for r in rows]

    # -- policy versions -----------------------------------------------------------------------

    def save_policy_version(self, *, document: Mapping[str, Any], created_by: str, source: str) -> str:
        """Store a policy document once per content; returns its version (sha256)."""
        version = policy_version_of(document)
        if self._has_policy_version(version):
            return version
        try:
            with self._write() as conn:
                conn.execute(
                    insert(policy_versions).values(
                        version=version,
                        document=dict(document),
                        created_at=self._now(),
                        created_by=created_by,
                        source=source,
                    )
                )
        except IntegrityError:
            if not self._has_policy_version(version):
                raise
        return version

    def _has_policy_version(self, version: str) -> bool:
        with self._read() as conn:
            found = conn.execute(
                select(policy_versions.c.version).where(policy_versions.c.version == version)
            ).one_or_none()
        return found is not None

    def get_policy_version(self, version: str) -> PolicyVersion:
        """A stored policy document, or :class:`NotFound`."""
        with self._read() as conn:
            row = conn.execute(select(policy_versions).where(policy_versions.c.version == version)).one_or_none()
        if row is None:
            raise NotFound("policy_version", version)
        return PolicyVersion(
            version=row.version,
            document=dict(row.document),
            created_at=row.created_at,
            created_by=row.created_by,
            source=row.source,
        )

    def find_policy_versions(self, *, prefix: str, limit: int = 2) -> list[str]:
        """Versions starting with ``prefix`` (hex), for short version ids on the command line."""
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            return []
        with self._read() as conn:
            rows = conn.execute(
                select(policy_versions.c.version)
                .where(policy_versions.c.version.startswith(prefix, autoescape=True))
                .order_by(policy_versions.c.version)
                .limit(limit)
            ).all()
        return [r.version for r in rows]

    def list_policy_versions(self, *, limit: int = DEFAULT_PAGE_SIZE) -> list[PolicyVersion]:
        """The newest stored policy versions first."""
        with self._read() as conn:
            rows = conn.execute(
                select(policy_versions).order_by(policy_versions.c.created_at.desc()).limit(limit)
            ).all()
        return [
            PolicyVersion(
                version=r.version,
                document=dict(r.document),
                created_at=r.created_at,
                created_by=r.created_by,
                source=r.source,
            )
            for r in rows
        ]

    # -- policy applications (what took effect, when, from where) --------------------------------

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
        with self._write() as conn:
            result = conn.execute(
                insert(policy_applications).values(
                    applied_at=self._now(),
                    applied_by=applied_by,
                    source=source,
                    modify_index=modify_index,
                    version=version,
                    overlays={tenant: dict(detail) for tenant, detail in (overlays or {}).items()},
                )
            )
            key = result.inserted_primary_key
        return int(key[0]) if key is not None else 0

    def list_policy_applications(self, *, limit: int = DEFAULT_PAGE_SIZE) -> list[PolicyApplication]:
        """Newest first: every time a control plane switched policy."""
        with self._read() as conn:
            rows = conn.execute(
                select(policy_applications)
                .order_by(policy_applications.c.applied_at.desc(), policy_applications.c.id.desc())
                .limit(limit)
            ).all()
        return [
            PolicyApplication(
                id=int(r.id),
                applied_at=r.applied_at,
                applied_by=r.applied_by,
                source=r.source,
                modify_index=r.modify_index,
                version=r.version,
                overlays=dict(r.overlays),
            )
            for r in rows
        ]

    # -- replay ------------------------------------------------------------------------------------

    def recorded_decisions(
        self, *, since: datetime | None = None, last: int | None = None, chunk: int = 2000
    ) -> Iterator[RecordedDecision]:
        """Each task's first receipt, oldest first: since a time, or the ``last`` N, or all.

        Streams in chunks by decision id so a day of traffic never sits in
        memory at once; every snapshot is read once per chunk.
        """
        # "no earlier receipt for the task": an index probe per row on (task_id, id), so each chunk costs
        # its own size; a GROUP BY over all receipts would be paid again by every chunk
        earlier = aliased(decisions)
        is_first = ~exists().where(earlier.c.task_id == decisions.c.task_id, earlier.c.id < decisions.c.id)
        bounds = select(decisions.c.id).where(is_first)
        if since is not None:
            bounds = bounds.where(decisions.c.decided_at >= since)
        start: str | None = None
        if last is not None:
            with self._read() as conn:
                newest = conn.execute(bounds.order_by(decisions.c.id.desc()).limit(last)).scalars().all()
            if not newest:
                return
            start = newest[-1]
        after: str | None = None
        while True:
            stmt = (
                select(
                    decisions.c.id.label("decision_id"),
                    decisions.c.decided_at,
                    decisions.c.policy_version,
                    # only the first candidate, read by the database: decoding whole plans was most of the time
                    decisions.c.plan[("candidates", 0, "target")].as_string().label("chosen_target"),
                    decisions.c.plan[("candidates", 0, "provider")].as_string().label("chosen_provider"),
                    decisions.c.plan[("candidates", 0, "expected_usd_h")].as_float().label("chosen_usd_h"),
                    decisions.c.plan[("candidates", 0, "max_price_usd_h")].as_float().label("chosen_max_usd_h"),
                    decisions.c.snapshot_id,
                    decisions.c.plan["signals_used"].label("signals_used"),
                    tasks,
                )
                .join(tasks, tasks.c.id == decisions.c.task_id)
                .where(is_first)
                .order_by(decisions.c.id)
                .limit(chunk)
            )
            if since is not None:
                stmt = stmt.where(decisions.c.decided_at >= since)
            if start is not None:
                stmt = stmt.where(decisions.c.id >= start)
            if after is not None:
                stmt = stmt.where(decisions.c.id > after)
            with self._read() as conn:
                rows = conn.execute(stmt).all()
                wanted = {r.snapshot_id for r in rows if r.snapshot_id is not None}
                snapshots = (
                    {
                        r.id: r.document
                        for r in conn.execute(
                            select(signal_snapshots.c.id, signal_snapshots.c.document).where(
                                signal_snapshots.c.id.in_(wanted)
                            )
                        )
                    }
                    if wanted
                    else {}
                )
            for row in rows:
                runtime = None
                if row.started_at is not None and row.finished_at is not None:
                    runtime = max((row.finished_at - row.started_at).total_seconds(), 0.0)
                yield RecordedDecision(
                    task=_task(row),
                    decided_at=row.decided_at,
                    policy_version=row.policy_version,
                    target=row.chosen_target,
                    provider=row.chosen_provider,
                    expected_usd_h=row.chosen_usd_h,
                    max_price_usd_h=row.chosen_max_usd_h,
                    snapshot_id=row.snapshot_id,
                    snapshot=snapshots.get(row.snapshot_id) if row.snapshot_id else None,
                    runtime_seconds=runtime,
                    capacity_seen=_capacity_seen(row.signals_used),
                )
            if len(rows) < chunk:
                return
            after = rows[-1].decision_id

    # -- signal history --------------------------------------------------------------------------

    def record_signal_samples(self, samples: Sequence[SignalSample]) -> int:
        """Append polled values to the history; returns how many."""
        if not samples:
            return 0
        rows = [
            {"source": s.source, "key": s.key[:256], "value": s.value, "observed_at": s.observed_at}
            for s in samples
            if s.value == s.value  # NaN never reaches the history (sources drop it; this is the last guard)
        ]
        if rows:
            with self._write() as conn:
                conn.execute(insert(signal_samples), rows)
        return len(rows)

    def signal_history(
        self,
        *,
        source: str | None = None,
        key: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[tuple[str, str, float, datetime]]:
        """(source, key, value, observed_at), newest first."""
        stmt = select(
            signal_samples.c.source, signal_samples.c.key, signal_samples.c.value, signal_samples.c.observed_at
        )
        if source is not None:
            stmt = stmt.where(signal_samples.c.source == source)
        if key is not None:
            stmt = stmt.where(signal_samples.c.key == key)
        if since is not None:
            stmt = stmt.where(signal_samples.c.observed_at >= since)
        stmt = stmt.order_by(signal_samples.c.observed_at.desc(), signal_samples.c.id.desc()).limit(limit)
        with self._read() as conn:
            return [(r.source, r.key, float(r.value), r.observed_at) for r in conn.execute(stmt)]

    def prune_signal_samples(self, *, older_than: datetime, batch: int = 10_000) -> int:
        """Delete history older than the retention, in bounded batches so no transaction grows large."""
        deleted = 0
        while True:
            with self._write() as conn:
                ids = (
                    conn.execute(
                        select(signal_samples.c.id).where(signal_samples.c.observed_at < older_than).limit(batch)
                    )
                    .scalars()
                    .all()
                )
                if ids:
                    conn.execute(signal_samples.delete().where(signal_samples.c.id.in_(ids)))
            deleted += len(ids)
            if len(ids) < batch:
                return deleted
