"""delivery: live scopes, live cache entries, and the live scope of a generation

Revision ID: 0004
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("live_scope", sa.String(length=63), nullable=True))
    op.create_table(
        "live_scopes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("allow_new_generations", sa.Boolean(), nullable=False),
        sa.Column("new_generations_limit", sa.Integer(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_generated_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "slug", name="uq_live_scopes_slug"),
    )
    op.create_index("ix_live_scopes_project_created", "live_scopes", ["project_id", "create_time"])
    op.create_table(
        "live_entries",
        sa.Column("scope_id", sa.String(length=36), nullable=False),
        sa.Column("cache_key", sa.String(length=64), nullable=False),
        sa.Column("generation_id", sa.String(length=36), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["generation_id"], ["generations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["scope_id"], ["live_scopes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("scope_id", "cache_key"),
    )
    op.create_index(op.f("ix_live_entries_generation_id"), "live_entries", ["generation_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_live_entries_generation_id"), table_name="live_entries")
    op.drop_table("live_entries")
    op.drop_index("ix_live_scopes_project_created", table_name="live_scopes")
    op.drop_table("live_scopes")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("live_scope")
