"""Migration 0005 on both backends: it adds the project stream index and the retention
horizons, its downgrade takes them away again (restoring the old index), and it re-applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from server.store.db import create_engine
from server.store.migrate import alembic_config, upgrade


def _shape(connection: Connection) -> tuple[set[str], bool, str | None]:
    """The outbox's index names, whether event_horizons exists, and the schema revision."""
    inspector = sa.inspect(connection)
    indexes = {index["name"] or "" for index in inspector.get_indexes("generation_events")}
    version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    return indexes, inspector.has_table("event_horizons"), version


async def _shape_of(engine: AsyncEngine) -> tuple[set[str], bool, str | None]:
    async with engine.connect() as connection:
        return await connection.run_sync(_shape)


async def _alembic(engine: AsyncEngine, verb: str, target: str) -> None:
    def run(connection: Connection) -> None:
        getattr(command, verb)(alembic_config(connection), target)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def test_0005_applies_downgrades_and_applies_again(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    url = storage.get("database_url") or f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}"
    engine = create_engine(url)
    try:
        await upgrade(engine)
        indexes, horizons, version = await _shape_of(engine)
        assert version == "0005"
        assert "ix_generation_events_project_seq" in indexes
        assert "ix_generation_events_project_id" not in indexes  # a prefix of the new one
        assert horizons

        await _alembic(engine, "downgrade", "-1")
        indexes, horizons, version = await _shape_of(engine)
        assert version != "0005"
        assert "ix_generation_events_project_seq" not in indexes
        assert "ix_generation_events_project_id" in indexes
        assert not horizons

        await _alembic(engine, "upgrade", "head")
        indexes, horizons, version = await _shape_of(engine)
        assert (version, horizons) == ("0005", True)
        assert "ix_generation_events_project_seq" in indexes
    finally:
        await engine.dispose()
