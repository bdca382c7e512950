"""Failover after launch: a re-queued task waits out its backoff before it is claimed again.

One nullable column, no new index: the claim query still walks
``ix_tasks_state_priority_rank_id`` (queued, in claim order) and skips the
few rows whose ``not_before`` lies ahead; only tasks backing off after a
failover ever have one.

Revision ID: 0004_task_not_before
Revises: 0003_signal_samples
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_task_not_before"
down_revision: str | None = "0003_signal_samples"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("not_before")
