"""The state store: SQLAlchemy tables and the repository functions (the only SQL).

``Store(make_engine())`` is the way in: one short transaction per call,
domain dataclasses out. ``upgrade()`` applies the Alembic migrations and
``is_current()`` says whether the database is at the newest revision.
"""

from controlplane.store.columns import utcnow
from controlplane.store.engine import DATABASE_URL_ENV, database_url, make_engine, normalize_url
from controlplane.store.errors import IdempotencyConflict, NotFound, StateMismatch, StoreError
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
    Store,
    policy_version_of,
)
from controlplane.store.spend import DailySpend, cloud_spend_today
from controlplane.store.waiting import WaitingSummary, backing_off, waiting_summary, wake_waiting

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "AttemptProgress",
    "SCHEDULER_LEASE",
    "DailySpend",
    "Event",
    "Fence",
    "Fenced",
    "IdempotencyConflict",
    "LeaderLease",
    "LeaseState",
    "NewTask",
    "NotFound",
    "OfferOutcomes",
    "PlannedLaunch",
    "PolicyApplication",
    "PolicyVersion",
    "RecordedDecision",
    "StateMismatch",
    "Store",
    "StoreError",
    "WaitingSummary",
    "backing_off",
    "cloud_spend_today",
    "current_revision",
    "database_url",
    "downgrade",
    "head_revision",
    "is_current",
    "make_engine",
    "new_id",
    "normalize_url",
    "offer_outcomes",
    "policy_version_of",
    "upgrade",
    "utcnow",
    "waiting_summary",
    "wake_waiting",
]
