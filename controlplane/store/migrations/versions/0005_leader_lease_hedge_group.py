"""Several control planes on one database, and hedged launches.

``leader_lease``: one row per lease name (``scheduler``); the replica whose
name is in ``holder`` schedules until ``expires_at``. ``token`` grows by one
at every change of holder: it is the fencing token that every scheduler
write checks, so a deposed leader's late write is refused.

``attempts.hedge_group``: the number of the first attempt of a hedged
launch, on every attempt of that launch (null when not hedged). Attempts of
one group are siblings, not one after the other, for failover's "is there a
newer attempt" question.

Revision ID: 0005_leader_lease_hedge_group
Revises: 0004_task_not_before
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_leader_lease_hedge_group"
down_revision: str | None = "0004_task_not_before"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leader_lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(256), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("attempts", sa.Column("hedge_group", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("hedge_group")
    op.drop_table("leader_lease")
