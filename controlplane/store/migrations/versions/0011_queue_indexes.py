"""Scale: the claim, the deadline sweep and the wake read a long queue through indexes, not a walk of it.

With thousands of tasks waiting (the launch day's 10x spike holds most of
its public work back until its deadline lets on-demand in), three reads of
every scheduler round walked every queued row:

- the claim walked ``(state, priority_rank, id)`` past every task still
  asleep to find the few that may be claimed. Now the claim first clears
  the ``not_before`` that has passed (a range of ``ix_tasks_not_before``:
  those rows only), so "claimable" is ``not_before IS NULL``, read in
  priority order off ``ix_tasks_claimable``, a partial index of those rows;
- the deadline sweep computed ``created_at + deadline_seconds`` for every
  queued, launching and running task: ``deadline_at`` is that sum, stored
  when the task is, and indexed with the state.

The wakes still walk ``(state, priority_rank, id)`` in claim order and stop
at their limit; a ``(state, not_before, ...)`` index, tried first, made
SQLite read every sleeping task and sort them instead.

Revision ID: 0011_queue_indexes
Revises: 0010_webhook_outbox
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0011_queue_indexes"
down_revision: str | None = "0010_webhook_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    _backfill_deadlines()
    op.create_index("ix_tasks_state_deadline_at", "tasks", ["state", "deadline_at"])
    claimable = sa.text("not_before IS NULL")
    op.create_index(
        "ix_tasks_claimable",
        "tasks",
        ["state", "priority_rank", "id"],
        sqlite_where=claimable,
        postgresql_where=claimable,
    )
    op.create_index("ix_tasks_not_before", "tasks", ["not_before"])


def _backfill_deadlines() -> None:
    """``deadline_at`` of the tasks stored before, with a deadline: in Python, the same on both databases."""
    bind = op.get_bind()
    table = sa.table(
        "tasks",
        sa.column("id", sa.String()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("deadline_seconds", sa.Integer()),
        sa.column("deadline_at", sa.DateTime(timezone=True)),
    )
    rows = bind.execute(
        sa.select(table.c.id, table.c.created_at, table.c.deadline_seconds).where(table.c.deadline_seconds.is_not(None))
    ).all()
    update = table.update().where(table.c.id == sa.bindparam("b_id")).values(deadline_at=sa.bindparam("b_at"))
    for start in range(0, len(rows), 1000):
        chunk = rows[start : start + 1000]
        bind.execute(
            update,
            [{"b_id": r.id, "b_at": r.created_at + timedelta(seconds=r.deadline_seconds)} for r in chunk],
        )


def downgrade() -> None:
    op.drop_index("ix_tasks_not_before", table_name="tasks")
    op.drop_index("ix_tasks_claimable", table_name="tasks")
    op.drop_index("ix_tasks_state_deadline_at", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("deadline_at")
