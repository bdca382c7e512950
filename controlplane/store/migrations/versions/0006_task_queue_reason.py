"""Queueing: a task with no placement now waits in ``queued`` with the reason, instead of failing.

``queue_reason`` says why a waiting task is not placed (the plan's
rejections, e.g. ``local: no_capacity``); null for a task that is not
waiting. ``queued_since`` is when its current wait began: the max queue
time (``thresholds.max_queue_seconds``) counts from there. Two nullable
columns, no new index: waiting tasks are queued tasks, and the claim query
walks ``ix_tasks_state_priority_rank_id`` as before.

Revision ID: 0006_task_queue_reason
Revises: 0005_leader_lease_hedge_group
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_task_queue_reason"
down_revision: str | None = "0005_leader_lease_hedge_group"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("queue_reason", sa.Text(), nullable=True))
    op.add_column("tasks", sa.Column("queued_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("queued_since")
        batch.drop_column("queue_reason")
