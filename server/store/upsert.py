"""INSERT … ON CONFLICT (do nothing, or raise a counter) for SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


async def insert_if_absent(session: AsyncSession, table: Table, values: dict[str, Any]) -> bool:
    """Insert one row unless its key exists; True if this call inserted it."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    module: Any = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table).values(**values).on_conflict_do_nothing()
    result = await session.execute(statement)
    return bool(getattr(result, "rowcount", 0))


async def raise_to(
    session: AsyncSession, table: Table, key: dict[str, Any], column: str, value: int
) -> None:
    """Insert the row with ``column`` = ``value``, or raise an existing row's to ``value``
    (never lower it: two writers racing leave the larger)."""
    postgres = session.bind is not None and session.bind.dialect.name == "postgresql"
    module: Any = postgresql if postgres else sqlite
    statement = module.insert(table).values(**key, **{column: value})
    larger = (func.greatest if postgres else func.max)(table.c[column], statement.excluded[column])
    await session.execute(
        statement.on_conflict_do_update(index_elements=list(key), set_={column: larger})
    )
