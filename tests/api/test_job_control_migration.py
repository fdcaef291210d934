"""Migration 0003 on a database that already has projects: each gets its own webhook secret."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from server.store.db import Database
from server.store.migrate import alembic_config


async def test_existing_projects_get_distinct_webhook_secrets(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")

    def to(revision: str) -> Callable[[Connection], None]:
        def run(connection: Connection) -> None:
            command.upgrade(alembic_config(connection), revision)

        return run

    try:
        async with db.write_engine.begin() as connection:
            await connection.run_sync(to("0001"))
            for slug in ("one", "two"):
                await connection.execute(
                    text(
                        "INSERT INTO projects (id, slug, name, create_time) "
                        "VALUES (:id, :slug, :slug, '2026-01-01 00:00:00')"
                    ),
                    {
                        "id": f"00000000-0000-7000-8000-00000000000{len(slug)}{slug[0]}",
                        "slug": slug,
                    },
                )
            await connection.run_sync(to("head"))
            secrets = (await connection.execute(text("SELECT webhook_secret FROM projects"))).all()
    finally:
        await db.dispose()
    values = [row[0] for row in secrets]
    assert len(values) == 2 and len(set(values)) == 2
    assert all(v.startswith("whsec_") and len(v) > 40 for v in values)
