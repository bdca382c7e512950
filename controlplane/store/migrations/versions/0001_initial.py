"""The state store: tasks, attempts, decisions (receipts), events and policy versions.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# written out here, not imported from the models: a migration must stay what it was
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("target_uri", sa.Text(), nullable=False),
        sa.Column("output_uri", sa.Text(), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("priority_rank", sa.SmallInteger(), nullable=False),
        sa.Column("data_sensitivity", sa.String(16), nullable=False),
        sa.Column("deadline_seconds", sa.Integer(), nullable=True),
        sa.Column("budget_usd", sa.Float(), nullable=True),
        sa.Column("options", _JSON, nullable=False),
        sa.Column("labels", _JSON, nullable=False),
        sa.Column("input_bytes", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("target", sa.String(128), nullable=True),
        _time("created_at"),
        _time("updated_at"),
        _time("planned_at", nullable=True),
        _time("started_at", nullable=True),
        _time("finished_at", nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        _time("claimed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_tasks_tenant_idempotency_key"),
    )
    op.create_index("ix_tasks_state_priority_rank_id", "tasks", ["state", "priority_rank", "id"])
    op.create_index("ix_tasks_tenant_created_at", "tasks", ["tenant", "created_at"])

    op.create_table(
        "attempts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("region", sa.String(128), nullable=True),
        sa.Column("instance_type", sa.String(128), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("backend_ref", sa.String(512), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _time("last_heartbeat_at", nullable=True),
        sa.Column("progress", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_attempts"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_attempts_task_id_tasks", ondelete="CASCADE"),
        sa.UniqueConstraint("task_id", "number", name="uq_attempts_task_id_number"),
    )
    op.create_index("ix_attempts_task_id", "attempts", ["task_id"])

    op.create_table(
        "decisions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("policy_version", sa.String(128), nullable=False),
        _time("decided_at"),
        sa.Column("plan", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_decisions_task_id_tasks", ondelete="CASCADE"),
    )
    op.create_index("ix_decisions_task_id_id", "decisions", ["task_id", "id"])

    op.create_table(
        "events",
        sa.Column("id", _BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("attempt_id", sa.String(32), nullable=True),
        _time("at"),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=True),
        sa.Column("detail", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_events_task_id_tasks", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["attempts.id"], name="fk_events_attempt_id_attempts", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_events_task_id_id", "events", ["task_id", "id"])

    op.create_table(
        "policy_versions",
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("document", _JSON, nullable=False),
        _time("created_at"),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_policy_versions"),
    )


def downgrade() -> None:
    op.drop_table("policy_versions")
    op.drop_index("ix_events_task_id_id", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_decisions_task_id_id", table_name="decisions")
    op.drop_table("decisions")
    op.drop_index("ix_attempts_task_id", table_name="attempts")
    op.drop_table("attempts")
    op.drop_index("ix_tasks_tenant_created_at", table_name="tasks")
    op.drop_index("ix_tasks_state_priority_rank_id", table_name="tasks")
    op.drop_table("tasks")
