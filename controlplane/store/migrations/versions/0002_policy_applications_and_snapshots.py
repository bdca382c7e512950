"""Policy applications (the audit trail of hot reloads) and the signal snapshot of every planning batch.

Revision ID: 0002_policy_applications
Revises: 0001_initial
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_policy_applications"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "policy_applications",
        sa.Column("id", _BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_by", sa.String(128), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("modify_index", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("overlays", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_applications"),
    )
    op.create_index("ix_policy_applications_applied_at", "policy_applications", ["applied_at"])
    op.create_table(
        "signal_snapshots",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("document", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_signal_snapshots"),
    )
    # nullable, no default: adding it is a catalogue change only, even on a large table
    op.add_column("decisions", sa.Column("snapshot_id", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("snapshot_id")
    op.drop_table("signal_snapshots")
    op.drop_index("ix_policy_applications_applied_at", table_name="policy_applications")
    op.drop_table("policy_applications")
