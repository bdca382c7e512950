"""Scale: the spot breaker poller reads the attempts of its window through an index, not a scan of every attempt.

The breaker source (``offer_outcomes``) polls every half minute for the
attempts updated within the breaker's window, and the live ones. Without an
index on ``updated_at`` that read walked the whole attempts table, which
grows by one row per launch forever: 1.7 ms at 2,000 attempts, a scan of
hundreds of thousands on a launch day's store. With this index each branch
of the read (updated in the window; launching or running) is an index
search.

Revision ID: 0009_attempts_updated_index
Revises: 0008_attempts_state_index
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009_attempts_updated_index"
down_revision: str | None = "0008_attempts_state_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_attempts_updated_at", "attempts", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_attempts_updated_at", table_name="attempts")
