"""generations: the claim's order and the deadlines, indexed over unfinished rows

Without them every claim sorted the whole queue (29 ms on SQLite, 71 ms on PostgreSQL
for a claim of 32 with 100,000 generations waiting), and the expiry check, twice a
second, read every unfinished row's deadline (21 and 28 ms). Both indexes are partial
(PENDING and PROCESSING rows only), so finished generations do not grow them. On
PostgreSQL, building them reads the table once and holds writes to it meanwhile
(start-up, before serving).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

# As in server/store/models.py at this revision (a migration does not import the models:
# they move on, it must not).
_ORDER = "coalesce(lease_expire_time, create_time)"
_UNFINISHED = "status IN ('pending', 'processing')"


def upgrade() -> None:
    op.create_index(
        "ix_generations_claim",
        "generations",
        [sa.text(_ORDER), "create_time"],
        postgresql_where=sa.text(_UNFINISHED),
        sqlite_where=sa.text(_UNFINISHED),
    )
    op.create_index(
        "ix_generations_deadline",
        "generations",
        ["deadline_time"],
        postgresql_where=sa.text(_UNFINISHED),
        sqlite_where=sa.text(_UNFINISHED),
    )


def downgrade() -> None:
    op.drop_index("ix_generations_deadline", table_name="generations")
    op.drop_index("ix_generations_claim", table_name="generations")
