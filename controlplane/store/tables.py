"""The store's tables, declared with SQLAlchemy 2's typed declarative mapping.

The classes exist to declare the schema (and let Alembic compare it with the
migrated database); the repository queries their ``__table__`` with Core
statements and hands out the domain's frozen dataclasses, never these rows.
Enum values are stored as their text; ``priority_rank`` is the number the
claim order sorts by (0 = urgent).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from controlplane.domain import Priority
from controlplane.store.columns import BigIntPK, JSONDocument, UTCDateTime

__all__ = [
    "PRIORITY_RANK",
    "AttemptRow",
    "Base",
    "DecisionRow",
    "EventRow",
    "LeaderLeaseRow",
    "PolicyApplicationRow",
    "PolicyVersionRow",
    "SignalSampleRow",
    "SignalSnapshotRow",
    "TaskRow",
    "WebhookDeliveryRow",
    "attempts",
    "decisions",
    "events",
    "leader_lease",
    "metadata",
    "policy_applications",
    "policy_versions",
    "signal_samples",
    "signal_snapshots",
    "tasks",
    "webhook_deliveries",
]

#: claim order: lower runs first
PRIORITY_RANK: dict[Priority, int] = {Priority.URGENT: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}

# deterministic constraint names, so migrations can drop and compare them on every database
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_ID = String(32)
_NAME = String(128)
_ENUM = String(16)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSONDocument}


class TaskRow(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    tenant: Mapped[str] = mapped_column(_NAME)
    kind: Mapped[str] = mapped_column(_ENUM)
    source_uri: Mapped[str] = mapped_column(Text)
    target_uri: Mapped[str] = mapped_column(Text)
    output_uri: Mapped[str] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(_ENUM)
    priority_rank: Mapped[int] = mapped_column(SmallInteger)
    data_sensitivity: Mapped[str] = mapped_column(_ENUM)
    deadline_seconds: Mapped[int | None] = mapped_column(Integer)
    #: ``created_at + deadline_seconds``, stored with the task: the deadline sweep reads it through an index
    deadline_at: Mapped[datetime | None]
    budget_usd: Mapped[float | None] = mapped_column(Float)
    options: Mapped[dict[str, Any]]
    labels: Mapped[dict[str, Any]]
    input_bytes: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(_ENUM)
    reason: Mapped[str | None] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(_NAME)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    planned_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    claimed_by: Mapped[str | None] = mapped_column(_NAME)
    claimed_at: Mapped[datetime | None]
    #: a queued task is not claimed before this (failover backoff); null: at once
    not_before: Mapped[datetime | None]
    #: why a queued task waits (no placement now, for a reason time can fix); null: not waiting
    queue_reason: Mapped[str | None] = mapped_column(Text)
    #: when its current wait began (the max queue time counts from here)
    queued_since: Mapped[datetime | None]
    #: where its outcome is POSTed (webhooks); null: nobody is told
    notify_url: Mapped[str | None] = mapped_column(Text)
    #: optional states told besides the outcomes, comma separated (``running``); null: the outcomes only
    notify_events: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key"),
        # the claim query: WHERE state = 'queued' ORDER BY priority_rank, id (id is creation order)
        Index("ix_tasks_state_priority_rank_id", "state", "priority_rank", "id"),
        # the claim: WHERE state = 'queued' AND not_before IS NULL ORDER BY priority_rank, id, off the claimable rows
        # only; a not_before that has passed is cleared first through ix_tasks_not_before (store/tasks.py)
        Index(
            "ix_tasks_claimable",
            "state",
            "priority_rank",
            "id",
            sqlite_where=text("not_before IS NULL"),
            postgresql_where=text("not_before IS NULL"),
        ),
        Index("ix_tasks_not_before", "not_before"),
        # the deadline sweep of every scheduler round (store/deadlines.py)
        Index("ix_tasks_state_deadline_at", "state", "deadline_at"),
        Index("ix_tasks_tenant_created_at", "tenant", "created_at"),
    )


class AttemptRow(Base):
    __tablename__ = "attempts"

    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    task_id: Mapped[str] = mapped_column(_ID, ForeignKey("tasks.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(_NAME)
    provider: Mapped[str] = mapped_column(String(32))
    region: Mapped[str | None] = mapped_column(_NAME)
    instance_type: Mapped[str | None] = mapped_column(_NAME)
    state: Mapped[str] = mapped_column(_ENUM)
    backend_ref: Mapped[str | None] = mapped_column(String(512))
    reason: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    #: sha256 hex of the attempt's callback token; the token itself is never stored
    token_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_heartbeat_at: Mapped[datetime | None]
    progress: Mapped[dict[str, Any]]
    #: the number of the first attempt of a hedged launch, on each of its attempts; null: not hedged
    hedge_group: Mapped[int | None] = mapped_column(Integer)
    #: where this attempt's worker was told to write the output (the target's store, or the task's own
    #: URI); null: launched before stores existed, or never sent
    output_uri: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("task_id", "number"),
        Index("ix_attempts_task_id", "task_id"),
        # follow's live_attempts every round: what is live, oldest first, without a walk of every attempt
        Index("ix_attempts_state_created_at", "state", "created_at"),
        # the breaker poller's window (offer_stats.py): what changed lately, without a walk of every attempt
        Index("ix_attempts_updated_at", "updated_at"),
        # the learned spot risk's history (spot_history.py): one range per spot target over its window
        Index("ix_attempts_target_created_at", "target", "created_at"),
    )


class DecisionRow(Base):
    __tablename__ = "decisions"

    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    task_id: Mapped[str] = mapped_column(_ID, ForeignKey("tasks.id", ondelete="CASCADE"))
    policy_version: Mapped[str] = mapped_column(_NAME)
    decided_at: Mapped[datetime]
    #: the whole PlacementPlan: candidates, rejections, trace, signals used
    plan: Mapped[dict[str, Any]]
    #: the planning batch's full signal snapshot, so ``policy simulate`` can replay any policy on it
    snapshot_id: Mapped[str | None] = mapped_column(_ID)

    __table_args__ = (Index("ix_decisions_task_id_id", "task_id", "id"),)


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(_ID, ForeignKey("tasks.id", ondelete="CASCADE"))
    attempt_id: Mapped[str | None] = mapped_column(_ID, ForeignKey("attempts.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(_NAME)
    kind: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(_ENUM)
    to_state: Mapped[str | None] = mapped_column(_ENUM)
    detail: Mapped[dict[str, Any]]

    __table_args__ = (Index("ix_events_task_id_id", "task_id", "id"),)


class PolicyVersionRow(Base):
    __tablename__ = "policy_versions"

    #: sha256 hex of the canonical JSON of ``document``
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    document: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(_NAME)
    #: where it came from: consul:KEY@INDEX, file:PATH, cli, ...
    source: Mapped[str] = mapped_column(String(512))


class PolicyApplicationRow(Base):
    """One policy change taking effect in a control plane: the audit trail behind ``policy history``."""

    __tablename__ = "policy_applications"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    applied_at: Mapped[datetime]
    applied_by: Mapped[str] = mapped_column(_NAME)
    #: consul:KEY or file:PATH
    source: Mapped[str] = mapped_column(String(512))
    #: Consul's ModifyIndex of the base document (null for files)
    modify_index: Mapped[int | None] = mapped_column(BigInteger)
    #: sha256 of the base document (a row of policy_versions)
    version: Mapped[str] = mapped_column(String(64))
    #: tenant -> {version (effective, merged), overlay_sha256, modify_index}
    overlays: Mapped[dict[str, Any]]

    __table_args__ = (Index("ix_policy_applications_applied_at", "applied_at"),)


class SignalSnapshotRow(Base):
    """The signals one planning batch saw, in the documented snapshot JSON."""

    __tablename__ = "signal_snapshots"

    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    taken_at: Mapped[datetime]
    document: Mapped[dict[str, Any]]


class SignalSampleRow(Base):
    """Signal history for ``fusionctl signals history`` and replay; pruned to a bounded retention."""

    __tablename__ = "signal_samples"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(256))
    value: Mapped[float] = mapped_column(Float)
    observed_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_signal_samples_source_key_observed_at", "source", "key", "observed_at"),
        # retention deletes by age across every signal
        Index("ix_signal_samples_observed_at", "observed_at"),
    )


class LeaderLeaseRow(Base):
    """Who schedules: one row per lease name; ``token`` (the fencing token) grows at every change of holder."""

    __tablename__ = "leader_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(256))
    token: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[datetime]
    renewed_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class WebhookDeliveryRow(Base):
    """The outbox: one event to POST, written in the transaction that moved its task (controlplane/store/outbox.py)."""

    __tablename__ = "webhook_deliveries"

    #: the event id a receiver deduplicates on (``webhook-id``): the same on every retry
    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    tenant: Mapped[str] = mapped_column(_NAME)
    task_id: Mapped[str] = mapped_column(_ID, ForeignKey("tasks.id", ondelete="CASCADE"))
    #: task.succeeded, task.failed, task.cancelled, task.running
    kind: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    #: the JSON body, fixed when the event is written: every retry sends the same bytes' meaning
    payload: Mapped[dict[str, Any]]
    #: pending, delivering (claimed), delivered, failed
    state: Mapped[str] = mapped_column(_ENUM)
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime]
    #: the replica delivering it now, and until when its claim holds (a crashed one's claim lapses)
    claimed_by: Mapped[str | None] = mapped_column(_NAME)
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_status: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        # the deliverer's claim: what is due, oldest first
        Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_tenant_id", "tenant", "id"),
        Index("ix_webhook_deliveries_task_id", "task_id"),
    )


metadata = Base.metadata
tasks = cast(Table, TaskRow.__table__)
attempts = cast(Table, AttemptRow.__table__)
decisions = cast(Table, DecisionRow.__table__)
events = cast(Table, EventRow.__table__)
policy_versions = cast(Table, PolicyVersionRow.__table__)
policy_applications = cast(Table, PolicyApplicationRow.__table__)
signal_snapshots = cast(Table, SignalSnapshotRow.__table__)
signal_samples = cast(Table, SignalSampleRow.__table__)
leader_lease = cast(Table, LeaderLeaseRow.__table__)
webhook_deliveries = cast(Table, WebhookDeliveryRow.__table__)
