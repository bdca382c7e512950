"""Signal history: every polled value, kept for a bounded retention.

Revision ID: 0003_signal_samples
Revises: 0002_policy_applications
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_signal_samples"
down_revision: str | None = "0002_policy_applications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "signal_samples",
        sa.Column("id", _BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_signal_samples"),
    )
    op.create_index("ix_signal_samples_source_key_observed_at", "signal_samples", ["source", "key", "observed_at"])
    op.create_index("ix_signal_samples_observed_at", "signal_samples", ["observed_at"])


def downgrade() -> None:
    op.drop_index("ix_signal_samples_observed_at", table_name="signal_samples")
    op.drop_index("ix_signal_samples_source_key_observed_at", table_name="signal_samples")
    op.drop_table("signal_samples")
