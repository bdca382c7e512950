"""Scale: the scheduler finds live attempts through an index, not a scan of every attempt ever made.

``follow`` reads the launching and running attempts every round
(``live_attempts``: state, oldest first). Without an index on the state
that read walks the whole attempts table, which grows by one row per launch
forever: at half a million attempts (a launch day, or the simulator's) each
round paid for all of them. ``(state, created_at)`` serves the filter and
the order, so the read costs what is live.

Revision ID: 0008_attempts_state_index
Revises: 0007_attempt_output_uri
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008_attempts_state_index"
down_revision: str | None = "0007_attempt_output_uri"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_attempts_state_created_at", "attempts", ["state", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_attempts_state_created_at", table_name="attempts")
