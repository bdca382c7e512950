"""Scale: the learned spot risk's history reads the spot targets' attempts of its window, not every attempt.

``spot_history`` (every minute, a 24-hour window by default) asked for
the attempts of the policy's spot targets created since the window's
start and walked every attempt to find them: on-demand, private and
refused launches included (12 ms a poll at 100,000 launch-day tasks,
docs/performance.md). ``(target, created_at)`` makes it one range per spot
target.

Revision ID: 0012_attempts_target_index
Revises: 0011_queue_indexes
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012_attempts_target_index"
down_revision: str | None = "0011_queue_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_attempts_target_created_at", "attempts", ["target", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_attempts_target_created_at", table_name="attempts")
