"""Webhooks: a task's notify URL, and the outbox of events to POST.

``tasks`` gains ``notify_url`` and ``notify_events`` (nullable: tasks stored
before tell nobody, as before). ``webhook_deliveries`` is the outbox: a row
is written in the same transaction as the task's transition it reports, so
no outcome is committed without its event and none is sent for a
transition that rolled back; the deliverer claims due rows, POSTs them and
records each try.

Revision ID: 0010_webhook_outbox
Revises: 0009_attempts_updated_index
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_webhook_outbox"
down_revision: str | None = "0009_attempts_updated_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# written out here, not imported from the models: a migration must stay what it was
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("tasks", sa.Column("notify_url", sa.Text(), nullable=True))
    op.add_column("tasks", sa.Column("notify_events", sa.String(64), nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("next_attempt_at"),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        _time("claimed_until", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        _time("created_at"),
        _time("updated_at"),
        _time("delivered_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_webhook_deliveries_task_id_tasks", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_state_next_attempt_at", "webhook_deliveries", ["state", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_tenant_id", "webhook_deliveries", ["tenant", "id"])
    op.create_index("ix_webhook_deliveries_task_id", "webhook_deliveries", ["task_id"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("notify_events")
        batch.drop_column("notify_url")
