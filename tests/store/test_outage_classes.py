"""Which database errors are outages, told on real errors of real databases: connection-level
failures (a stopped or restarting PostgreSQL, a killed connection, no connection slot, an
SQLite file that cannot be opened) are; a reachable database refusing a statement (syntax,
constraint, data errors, SQLite lock contention) is not."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from postgres import DedicatedPostgres, Postgres, start_dedicated_postgres
from sqlalchemy import text

from server.domain.outages import DATABASE
from server.store.db import Database
from server.store.outages import outage_of
from server.store.sqlite_inline import connect_inline


async def _raised(action: Callable[[], Awaitable[object]]) -> BaseException:
    """The error ``action`` raises (it must raise one)."""
    try:
        await action()
    except Exception as error:
        return error
    raise AssertionError("no error was raised")


async def _error_of(db: Database, *statements: str) -> BaseException:
    """The error running ``statements`` in one transaction raises."""

    async def run() -> None:
        async with db.write.begin() as session:
            for statement in statements:
                await session.execute(text(statement))

    return await _raised(run)


def _select_one(db: Database) -> Callable[[], Awaitable[object]]:
    async def run() -> None:
        async with db.read() as session:
            await session.execute(text("SELECT 1"))

    return run


@pytest.fixture
async def pg(postgres_server: Postgres) -> AsyncIterator[Database]:
    url = await postgres_server.create_database()
    db = Database(url)
    try:
        yield db
    finally:
        await db.dispose()
        await postgres_server.drop_database(url)


@pytest.mark.parametrize(
    ("statements", "sqlstate"),
    [
        (["SELEC 1"], "42601"),  # syntax error
        (["SELECT * FROM no_such_table"], "42P01"),  # undefined table
        (["SELECT 1 / 0"], "22012"),  # division by zero: a data error
        (["SELECT 'x'::int"], "22P02"),  # invalid text representation
        (
            ["CREATE TEMP TABLE t (k int UNIQUE)", "INSERT INTO t VALUES (1), (1)"],
            "23505",  # unique violation
        ),
        (["SET LOCAL statement_timeout = 1", "SELECT pg_sleep(1)"], "57014"),  # query canceled
    ],
    ids=["syntax", "undefined-table", "division", "cast", "unique", "statement-timeout"],
)
async def test_postgres_statement_errors_are_not_outages(
    pg: Database, statements: list[str], sqlstate: str
) -> None:
    error = await _error_of(pg, *statements)
    assert _sqlstate_in_chain(error) == sqlstate, repr(error)
    assert outage_of(error) is None, repr(error)


async def test_a_killed_connection_is_an_outage(pg: Database, postgres_server: Postgres) -> None:
    async def run() -> None:
        async with pg.write.begin() as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            killer = await asyncpg.connect(
                user="postgres", database="postgres", host=postgres_server.socket_dir
            )
            try:
                await killer.execute("SELECT pg_terminate_backend($1)", pid)
            finally:
                await killer.close()
            await session.execute(text("SELECT 1"))

    error = await _raised(run)
    assert outage_of(error) == DATABASE, repr(error)


async def test_no_connection_slot_is_an_outage(postgres_server: Postgres) -> None:
    # A role allowed no connections: PostgreSQL answers 53300 (too many connections).
    role = "r_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(
        user="postgres", database="postgres", host=postgres_server.socket_dir
    )
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
        db = Database(f"postgresql+asyncpg://{role}@/postgres?host={postgres_server.socket_dir}")
        try:
            error = await _raised(_select_one(db))
        finally:
            await db.dispose()
        assert _sqlstate_in_chain(error) == "53300", repr(error)
        assert outage_of(error) == DATABASE
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


@pytest.fixture
def own_postgres() -> Iterator[DedicatedPostgres]:
    server = start_dedicated_postgres()
    yield server
    server.delete()


async def test_a_stopped_postgres_is_an_outage(own_postgres: DedicatedPostgres) -> None:
    url = await own_postgres.address.create_database()
    db = Database(url)
    try:
        async with db.read() as session:
            await session.execute(text("SELECT 1"))
        await asyncio.to_thread(own_postgres.stop)
        # Once cut (the pooled connection), then refused (a new one).
        for _ in range(2):
            error = await _raised(_select_one(db))
            assert outage_of(error) == DATABASE, repr(error)
    finally:
        await db.dispose()


@pytest.fixture
async def lite(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'lite.db'}")
    try:
        yield db
    finally:
        await db.dispose()


@pytest.mark.parametrize(
    "statements",
    [
        ["SELEC 1"],
        ["SELECT * FROM no_such_table"],
        ["CREATE TABLE t (k int UNIQUE)", "INSERT INTO t VALUES (1), (1)"],
    ],
    ids=["syntax", "undefined-table", "unique"],
)
async def test_sqlite_statement_errors_are_not_outages(
    lite: Database, statements: list[str]
) -> None:
    # sqlite3 calls the first two OperationalError, as it does a file it cannot open.
    error = await _error_of(lite, *statements)
    assert outage_of(error) is None, repr(error)


async def test_an_sqlite_file_that_cannot_be_opened_is_an_outage(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'gone' / 'lite.db'}")
    try:
        error = await _raised(_select_one(db))
    finally:
        await db.dispose()
    assert "unable to open database file" in str(error)
    assert outage_of(error) == DATABASE


def _hold_write_lock(path: Path, seconds: float, held: threading.Event) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        held.set()
        threading.Event().wait(seconds)
        other.execute("COMMIT")
    finally:
        other.close()


async def test_sqlite_lock_contention_is_waited_out_not_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    sqlite3.connect(path).close()
    held = threading.Event()
    # Held past the wait: the statement fails "database is locked", which is contention.
    holder = threading.Thread(target=_hold_write_lock, args=(path, 1.0, held))
    holder.start()
    held.wait(10)
    short = await connect_inline(str(path), busy_seconds=0.2)
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked") as caught:
            await short.execute("CREATE TABLE t (k int)")
        assert outage_of(caught.value) is None
    finally:
        await short.close()
        holder.join()
    # Held for less than the wait: retried with backoff until it succeeds.
    held.clear()
    holder = threading.Thread(target=_hold_write_lock, args=(path, 0.3, held))
    holder.start()
    held.wait(10)
    patient = await connect_inline(str(path), busy_seconds=10.0)
    try:
        await patient.execute("CREATE TABLE t (k int)")
        await patient.commit()
    finally:
        await patient.close()
        holder.join()


def _sqlstate_in_chain(error: BaseException | None) -> str | None:
    while error is not None:
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str):
            return state
        error = error.__cause__ or error.__context__
    return None
