"""The state store, the only SQL: one module per aggregate over a transaction core, behind the ``Store`` facade.

``Store(make_engine())`` is the way in: one short transaction per call,
domain dataclasses out. ``upgrade()`` applies the Alembic migrations and
``is_current()`` says whether the database is at the newest revision.

What lives where: ``core`` is the transaction core every other module goes
through (``StoreCore``: ``now()``, ``write()``, ``read()``, ``locked()``; the
row mappers; ``event_row``; and ``transition_task``, the one place a task
changes state with its ``task.transition`` event, always checked against
the state machine). One module per aggregate sits on it: ``tasks``
(submission, reads, claims), ``launches`` (a batch of receipts and the
attempts they start), ``attempts`` (attempt state, the hedge race,
heartbeats), ``failover``, ``decisions`` (receipts and their replay),
``events``, ``policy_versions`` (and applications), ``signal_samples``,
``spend``, ``offer_stats``, ``waiting``, ``webhooks`` (the outbox's delivering side; its
writing side, ``outbox``, sits under ``core`` so every transition can write it), ``deadlines``, ``stranded`` (work a
dead scheduler left), ``uploads`` and ``lease`` (the leader lease; its
fencing token is in ``fence``). ``repository.Store`` is a thin facade whose
methods name those functions; ``tables``, ``columns``, ``codec``, ``ids``,
``records``, ``errors``, ``engine`` and ``migrate`` hold the schema, the
column types, JSON codecs, ids, small records, errors, engine set-up and
migrations. No module reaches into another's private names.
"""

from controlplane.store.columns import utcnow
from controlplane.store.engine import DATABASE_URL_ENV, database_url, make_engine, normalize_url
from controlplane.store.errors import IdempotencyConflict, NotFound, StateMismatch, StoreError
from controlplane.store.events import events_after
from controlplane.store.failover import Shortage
from controlplane.store.follow_view import FollowView, TaskGlance
from controlplane.store.ids import new_id
from controlplane.store.lease import SCHEDULER_LEASE, Fence, Fenced, LeaderLease, LeaseState
from controlplane.store.migrate import current_revision, downgrade, head_revision, is_current, upgrade
from controlplane.store.offer_stats import OfferOutcomes, offer_outcomes
from controlplane.store.records import AttemptProgress, Event, PolicyApplication, PolicyVersion
from controlplane.store.repository import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    NewTask,
    PlannedLaunch,
    RecordedDecision,
    RunningStart,
    Store,
    policy_version_of,
)
from controlplane.store.running import Outcome
from controlplane.store.spend import DailySpend, TaskCost, cloud_spend_today, task_costs
from controlplane.store.waiting import WaitingSummary, backing_off, waiting_summary, wake_waiting, wake_waiting_for
from controlplane.store.webhooks import (
    Delivery,
    OutboxDepth,
    claim_deliveries,
    finish_delivery,
    get_delivery,
    list_deliveries,
    outbox_depth,
    retry_delivery,
)

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "AttemptProgress",
    "SCHEDULER_LEASE",
    "TaskCost",
    "DailySpend",
    "Delivery",
    "Event",
    "Fence",
    "Fenced",
    "FollowView",
    "IdempotencyConflict",
    "LeaderLease",
    "LeaseState",
    "NewTask",
    "NotFound",
    "OfferOutcomes",
    "OutboxDepth",
    "Outcome",
    "PlannedLaunch",
    "PolicyApplication",
    "PolicyVersion",
    "RecordedDecision",
    "RunningStart",
    "Shortage",
    "StateMismatch",
    "Store",
    "StoreError",
    "TaskGlance",
    "WaitingSummary",
    "backing_off",
    "claim_deliveries",
    "cloud_spend_today",
    "task_costs",
    "current_revision",
    "database_url",
    "downgrade",
    "events_after",
    "finish_delivery",
    "get_delivery",
    "head_revision",
    "is_current",
    "list_deliveries",
    "make_engine",
    "new_id",
    "normalize_url",
    "offer_outcomes",
    "outbox_depth",
    "policy_version_of",
    "retry_delivery",
    "upgrade",
    "utcnow",
    "waiting_summary",
    "wake_waiting",
    "wake_waiting_for",
]
