"""Data plane: each attempt records where its worker writes the output.

A task placed on a cloud target with a store writes its output there
(``<store root><tenant>/<task id>/output<suffix>``), not at the task's own
local path; ``GET /v1/tasks/{id}/output`` serves the succeeded attempt's
``output_uri``. One nullable column: attempts launched before it read as
"the task's own output URI", as they were.

Revision ID: 0007_attempt_output_uri
Revises: 0006_task_queue_reason
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_attempt_output_uri"
down_revision: str | None = "0006_task_queue_reason"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("output_uri", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("output_uri")
