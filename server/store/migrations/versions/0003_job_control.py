"""job control: cancel, deadlines, webhooks and their outbox

Revision ID: 0003
Revises: 0004
Create Date: 2026-11-30 17:00:00
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0004"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timeout_ms", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("deadline_time", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("cancel_time", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("webhook_url", sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column("webhook_events", sa.JSON(), nullable=True))
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("webhook_secret", sa.String(length=80), nullable=True))
    # Every existing project gets its own signing secret (new ones get it when created).
    connection = op.get_bind()
    for (project_id,) in connection.execute(sa.text("SELECT id FROM projects")).all():
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        connection.execute(
            sa.text("UPDATE projects SET webhook_secret = :secret WHERE id = :id"),
            {"secret": secret, "id": project_id},
        )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("generation_id", sa.String(length=36), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_token", sa.String(length=36), nullable=True),
        sa.Column("claim_expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_generation_id"), ["generation_id"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_deliveries_due", ["state", "next_attempt_time"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_deliveries_project_created",
            ["project_id", "create_time", "id"],
            unique=False,
        )
    op.create_table(
        "webhook_attempts",
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["webhook_deliveries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("delivery_id", "number"),
    )


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_project_created")
        batch_op.drop_index("ix_webhook_deliveries_due")
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_generation_id"))
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("webhook_secret")
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_column("webhook_events")
        batch_op.drop_column("webhook_url")
        batch_op.drop_column("cancel_time")
        batch_op.drop_column("deadline_time")
        batch_op.drop_column("timeout_ms")
