"""outbox: a (project_id, seq) index for project streams, and the retention horizon per project

Revision ID: 0005
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    # The project streams' reads filter on project_id and order by seq; the old
    # project_id index is a prefix of the new one, so it goes.
    with op.batch_alter_table("generation_events") as batch:
        batch.create_index("ix_generation_events_project_seq", ["project_id", "seq"])
        batch.drop_index("ix_generation_events_project_id")
    op.create_table(
        "event_horizons",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("pruned_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("project_id"),
    )


def downgrade() -> None:
    op.drop_table("event_horizons")
    with op.batch_alter_table("generation_events") as batch:
        batch.create_index("ix_generation_events_project_id", ["project_id"])
        batch.drop_index("ix_generation_events_project_seq")
