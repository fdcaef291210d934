"""Writes of the hot paths, run on the driver's connection from SQL compiled once.

On SQLite a statement runs on the event loop in microseconds (sqlite_inline.py), and
SQLAlchemy's machinery around each execution (the compiled-cache lookup, the execution
context, parameter processing and result set-up, through a greenlet) cost about 45 µs an
insert: most of a create's three. Here the INSERT is compiled once per table and set of
columns, each value goes through the bind processor of its column's type (exactly what
SQLAlchemy stores: ISO times, JSON text, 0/1 for booleans), and the statement runs on
the aiosqlite connection of the Session's transaction (its BEGIN IMMEDIATE issued first),
about 10 µs. On PostgreSQL ``insert_rows`` goes through the Session as before, and
``execute_many`` (the engine's claim and finish batches: their updates, image inserts and
outbox inserts) runs on asyncpg's connection of the Session's transaction once it has
begun, with the parameters converted as SQLAlchemy converts them.

Rows the Session holds unflushed are not flushed first, as a Core insert through
``session.execute`` would not flush them either.

A transaction of several creates (store/group_commit.py) may defer its inserts
(``defer_inserts``): rows are then collected per table and written by
``write_deferred`` at the end, one statement per table for all of them (on PostgreSQL one
round trip each instead of one per row). Until then they are invisible to the
transaction's own reads: a write that reads what an earlier write of its batch inserted
(a replayed create) calls ``write_deferred`` first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable, Insert, Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import UpdateBase


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A statement compiled for one dialect (an INSERT for SQLite, an executemany for
    asyncpg), with the bind processors of its parameters in their positional order."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def arguments(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """A row's values as the driver takes them, in the statement's parameter order."""
        return tuple(
            value if process is None else process(value)
            for value, process in zip(
                (values[name] for name in self.names), self.processors, strict=True
            )
        )


_PREPARED: dict[tuple[Table, tuple[str, ...]], _Prepared] = {}
_STATEMENTS: dict[Table, Insert] = {}
# session.info: the inserts deferred in its transaction, in the order to write them.
_DEFERRED = "imagegen_deferred_inserts"


@dataclass(slots=True)
class _Deferred:
    """Rows waiting to be inserted into one table (by ``statement`` if given)."""

    statement: Executable | None
    rows: list[Mapping[str, Any]]


def defer_inserts(session: AsyncSession, order: Sequence[Table]) -> None:
    """From now on collect this transaction's inserts into the ``order`` tables (the
    order ``write_deferred`` writes them in: referenced tables first)."""
    session.info[_DEFERRED] = {table: _Deferred(None, []) for table in order}


async def write_deferred(session: AsyncSession) -> None:
    """Insert every row deferred so far, one statement per table, in their order."""
    deferred: dict[Table, _Deferred] | None = session.info.get(_DEFERRED)
    if deferred is None:
        return
    for table, waiting in deferred.items():
        rows, waiting.rows = waiting.rows, []
        if not rows:
            continue
        if waiting.statement is not None:
            await session.execute(waiting.statement, rows)
        else:
            await _insert_now(session, table, rows)


async def insert_rows(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    statement: Executable | None = None,
) -> None:
    """Insert ``rows`` (each with the same columns) into ``table`` in the Session's
    transaction (or collect them, when it defers inserts into ``table``).

    ``statement``: a statement of the caller's that inserts one such row (its parameters
    the row's values), run instead of a plain INSERT.
    """
    if not rows:
        return
    deferred: dict[Table, _Deferred] | None = session.info.get(_DEFERRED)
    if deferred is not None and table in deferred:
        deferred[table].statement = statement
        deferred[table].rows.extend(rows)
        return
    if statement is not None:
        await session.execute(statement, list(rows) if len(rows) > 1 else rows[0])
        return
    await _insert_now(session, table, rows)


async def _insert_now(
    session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    bind = session.bind
    if bind is None or bind.dialect.name != "sqlite":
        statement = _STATEMENTS.get(table)
        if statement is None:
            # Built once: a statement memoises its cache key.
            statement = _STATEMENTS[table] = insert(table)
        await session.execute(statement, list(rows) if len(rows) > 1 else rows[0])
        return
    prepared = _prepare(table, tuple(rows[0]), bind.dialect)
    # The Session's connection, its transaction begun (BEGIN IMMEDIATE on the writer).
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if len(rows) == 1:
        cursor = await driver.execute(prepared.sql, prepared.arguments(rows[0]))
    else:
        cursor = await driver.executemany(prepared.sql, [prepared.arguments(row) for row in rows])
    await cursor.close()


def _prepare(table: Table, columns: tuple[str, ...], dialect: Dialect) -> _Prepared:
    key = (table, columns)
    prepared = _PREPARED.get(key)
    if prepared is not None:
        return prepared
    for column in table.columns:
        if column.name not in columns and column.default is not None:
            # SQLAlchemy would fill it in from Python; this path does not.
            raise ValueError(f"{table.name}.{column.name} must be given (it has a default)")
    compiled = insert(table).values({name: None for name in columns}).compile(dialect=dialect)
    # Parameters in the compiled statement's order (the table's order of its columns).
    positions = tuple(compiled.positiontup or ())
    assert sorted(positions) == sorted(columns), (positions, columns)
    prepared = _Prepared(
        sql=str(compiled),
        names=positions,
        processors=tuple(_processor(table, name, dialect) for name in positions),
    )
    _PREPARED[key] = prepared
    return prepared


def _processor(table: Table, name: str, dialect: Dialect) -> Callable[[Any], Any] | None:
    """What SQLAlchemy does to a value of this column before the driver sees it: the type
    as the dialect implements it (SQLite's DATETIME and JSON), a TypeDecorator's own step
    first."""
    column_type = table.c[name].type
    return column_type.dialect_impl(dialect).bind_processor(dialect)


# --- executemany on PostgreSQL's driver connection ---


# Keyed by the statement object (built once at import by its owner, and kept alive here)
# and the columns of its rows (an INSERT without values sets the columns given).
_DRIVER_STATEMENTS: dict[tuple[int, tuple[str, ...]], tuple[UpdateBase, _Prepared]] = {}


async def execute_many(
    session: AsyncSession, statement: UpdateBase, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Run ``statement`` (built once, returning nothing) once per row in the Session's
    transaction, in one executemany.

    On PostgreSQL, once the transaction has begun, on asyncpg's own connection with the
    SQL compiled once: SQLAlchemy's per-execution work (the cache key, the execution
    context, each row's parameters through its machinery, a greenlet hop) cost more CPU
    than the round trip. Elsewhere, and before the transaction's first statement,
    through the Session.
    """
    if not rows:
        return
    bind = session.bind
    if bind is not None and bind.dialect.name == "postgresql":
        connection = await session.connection()
        driver: Any = (await connection.get_raw_connection()).driver_connection
        if driver is not None and driver.is_in_transaction():
            prepared = _driver_statement(statement, tuple(rows[0]), bind.dialect)
            await driver.executemany(prepared.sql, [prepared.arguments(row) for row in rows])
            return
    await session.execute(statement, list(rows) if len(rows) > 1 else rows[0])


def _driver_statement(
    statement: UpdateBase, columns: tuple[str, ...], dialect: Dialect
) -> _Prepared:
    key = (id(statement), columns)
    found = _DRIVER_STATEMENTS.get(key)
    if found is not None and found[0] is statement:
        return found[1]
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    names = tuple(compiled.positiontup or ())
    missing = [name for name in names if name not in columns]
    if missing:
        # A column SQLAlchemy would fill in from Python (a default), or a parameter the
        # rows lack: this path fills in nothing.
        raise ValueError(f"rows for this statement must give {', '.join(missing)}")
    prepared = _Prepared(
        sql=str(compiled),
        names=names,
        processors=tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in names
        ),
    )
    _DRIVER_STATEMENTS[key] = (statement, prepared)
    return prepared
