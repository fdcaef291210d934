"""Migrations 0005 and 0006 on both backends. 0005 adds the project stream index and the
retention horizons; 0006 the claim and deadline indexes. Each downgrade takes its part away again
(0005's restores the old index), and each re-applies."""

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
        await _alembic(engine, "upgrade", "0005")
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

        await _alembic(engine, "upgrade", "0005")
        indexes, horizons, version = await _shape_of(engine)
        assert (version, horizons) == ("0005", True)
        assert "ix_generation_events_project_seq" in indexes
    finally:
        await engine.dispose()


def _generation_indexes(connection: Connection) -> tuple[set[str], str | None]:
    # From the catalogs: SQLAlchemy's SQLite inspector leaves out indexes on expressions.
    catalog = (
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'generations'"
        if connection.dialect.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE tablename = 'generations'"
    )
    indexes = set(connection.exec_driver_sql(catalog).scalars())
    version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    return indexes, version


async def test_0006_applies_downgrades_and_applies_again(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    url = storage.get("database_url") or f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}"
    engine = create_engine(url)

    async def shape() -> tuple[set[str], str | None]:
        async with engine.connect() as connection:
            return await connection.run_sync(_generation_indexes)

    try:
        await upgrade(engine)
        indexes, version = await shape()
        assert version == "0006"
        assert {"ix_generations_claim", "ix_generations_deadline", "ix_generations_due"} <= indexes

        await _alembic(engine, "downgrade", "-1")
        indexes, version = await shape()
        assert version == "0005"
        assert not {"ix_generations_claim", "ix_generations_deadline"} & indexes
        assert "ix_generations_due" in indexes

        await _alembic(engine, "upgrade", "head")
        indexes, version = await shape()
        assert (version, "ix_generations_claim" in indexes) == ("0006", True)
    finally:
        await engine.dispose()
