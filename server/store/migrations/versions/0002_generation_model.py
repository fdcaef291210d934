"""generation model, seed, negative prompt, output format and enhancer notes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 16:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    # Server defaults give generations created before this revision the values
    # they ran with: the local generator, its own format, no negative prompt.
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("model", sa.String(length=200), server_default="local", nullable=False)
        )
        batch_op.add_column(sa.Column("seed", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("negative_prompt", sa.Text(), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("output_format", sa.String(length=8), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("enhanced_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("enhancement_fallback_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_column("enhancement_fallback_reason")
        batch_op.drop_column("enhanced_by")
        batch_op.drop_column("output_format")
        batch_op.drop_column("negative_prompt")
        batch_op.drop_column("seed")
        batch_op.drop_column("model")
