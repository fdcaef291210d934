"""Database engines and sessions: one Database per process, one AsyncSession per RPC or job.

SQLite allows one writer at a time, and a transaction that reads and then
writes fails at once (SQLITE_BUSY) if another writer committed in between. So
on SQLite, writes go through their own one-connection engine that starts every
transaction with BEGIN IMMEDIATE: writers queue in the pool (without blocking
the event loop) instead of failing, and readers use WAL snapshots beside them.
On PostgreSQL both names share one pooled engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final

import asyncpg
from sqlalchemy import Executable, Row, event
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, PoolProxiedConnection

from server.store.prepared import CompiledRead, PreparedRead
from server.store.sqlite_inline import InlineConnection, connect_inline, is_busy

# How long a statement waits for another connection's write lock before it fails.
SQLITE_BUSY_SECONDS: Final = 30.0
# A PostgreSQL connection idle in the pool for longer is checked before it is used.
PING_AFTER_IDLE_SECONDS: Final = 1.0
_LAST_USED: Final = "imagegen_last_used"
# PostgreSQL connections ``fetch_prepared`` keeps checked out for its reads (the pool
# grows by as many, so the rest keep theirs).
HELD_READERS: Final = 4
# An execution option: this SQLite connection runs each statement in a transaction of its
# own (no BEGIN), for single-statement reads.
SINGLE_STATEMENTS: Final = "imagegen_single_statements"


class Database:
    """The engines of one database and their session factories."""

    def __init__(self, url: str, *, timeout_seconds: float | None = None) -> None:
        """``timeout_seconds`` (PostgreSQL): the most that connecting, waiting for a pooled
        connection, or one statement may take; beyond it the call fails as an outage
        (asyncpg's TimeoutError), so a hung server answers UNAVAILABLE, not never."""
        self.url = url
        self._timeout_seconds = timeout_seconds
        if url.startswith("sqlite"):
            self.read_engine = _sqlite_engine(url, immediate=False, pool_size=8)
            self.write_engine = _sqlite_engine(url, immediate=True, pool_size=1)
        else:
            bounds: dict[str, Any] = {}
            if timeout_seconds is not None:
                # asyncpg's own bounds: they hold while the server answers nothing at all.
                asyncpg_bounds = {"timeout": timeout_seconds, "command_timeout": timeout_seconds}
                bounds = {"connect_args": asyncpg_bounds, "pool_timeout": timeout_seconds}
            self.read_engine = create_async_engine(
                url,
                pool_size=10 + HELD_READERS,
                max_overflow=20,
                json_deserializer=loads_json,
                **bounds,
            )
            _ping_when_idle(self.read_engine)
            self.write_engine = self.read_engine
        self.read: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.read_engine, expire_on_commit=False
        )
        self.write: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.write_engine, expire_on_commit=False
        )
        # SQLite: the connection ``fetch`` keeps for its one-statement reads.
        self._reader: AsyncConnection | None = None
        # Its sqlite3 connection, which ``fetch_prepared`` runs idle-time reads on directly.
        self._direct_reader: sqlite3.Connection | None = None
        self._reader_lock = asyncio.Lock()
        # PostgreSQL: the connections ``fetch_prepared`` keeps for its reads.
        self._held = _HeldReaders(self.read_engine, HELD_READERS)

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self.write_engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        """Whether this is the embedded SQLite database (single writer: no SKIP LOCKED)."""
        return self.dialect == "sqlite"

    async def fetch(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """The rows of one read-only statement, run on a reader connection (one round trip).

        For hot reads where a Session (identity map, ORM objects) costs more than it gives.
        """
        if not self.is_sqlite:
            async with self.read_engine.connect() as connection:
                result = await connection.execute(statement, params)
                return result.all()
        # On SQLite one reader connection stays open for these reads, each statement its
        # own implicit transaction (no BEGIN, nothing to roll back): checking a connection
        # out and in, BEGIN and ROLLBACK cost about 80 us a read through SQLAlchemy, more
        # than the indexed read itself. Statements run on the loop and do not wait, so
        # reads take turns on it; the lock only matters while one waits out a lock held
        # by another process.
        async with self._reader_lock:
            reader = await self._shared_reader()
            try:
                result = await reader.execute(statement, params)
                return result.all()
            except BaseException:
                await self._drop_reader(reader)
                raise

    async def fetch_prepared(self, read: PreparedRead, params: Mapping[str, Any]) -> list[Any]:
        """The rows of a hot read, run on the driver's own connection (see prepared.py).

        Rows have the statement's columns as attributes and ``_mapping``, values
        converted as SQLAlchemy's would be. On SQLite the read shares ``fetch``'s
        reader; on PostgreSQL it runs outside a transaction on one of a few
        connections kept checked out for these reads.
        """
        compiled = read.bind(self.read_engine.dialect)
        arguments = compiled.arguments(params)
        if not self.is_sqlite:
            return compiled.rows(await self._held.fetch(compiled, arguments))
        if compiled.processors is None:
            compiled.learn_types(None)  # SQLite's cursor says nothing of types
        direct = self._direct_reader
        if direct is not None and not self._reader_lock.locked():
            # The shared reader is idle (a statement on it runs to its end on the loop,
            # and the lock is only held across a wait): run the read right here, with
            # no task, greenlet or aiosqlite wrapper around it.
            try:
                return compiled.rows(direct.execute(compiled.sql, arguments).fetchall())
            except sqlite3.OperationalError as error:
                if not is_busy(error):
                    await self._drop_reader(self._reader)
                    raise
                # Another connection holds a lock: the path below waits it out.
            except BaseException:
                await self._drop_reader(self._reader)
                raise
        async with self._reader_lock:
            reader = await self._shared_reader()
            try:
                driver = (await reader.get_raw_connection()).driver_connection
                assert driver is not None
                records = await driver.execute_fetchall(compiled.sql, arguments)
            except BaseException:
                await self._drop_reader(reader)
                raise
        return compiled.rows(records)

    async def _shared_reader(self) -> AsyncConnection:
        """SQLite: the reader connection one-statement reads share (opened at first use)."""
        reader = self._reader
        if reader is None:
            reader = await self.read_engine.connect()
            await reader.execution_options(**{SINGLE_STATEMENTS: True})
            self._reader = reader
            driver = (await reader.get_raw_connection()).driver_connection
            self._direct_reader = driver.sqlite if isinstance(driver, InlineConnection) else None
        return reader

    async def _drop_reader(self, reader: AsyncConnection | None) -> None:
        # Whatever went wrong, the next read starts on a fresh reader.
        self._reader = None
        self._direct_reader = None
        if reader is not None:
            with contextlib.suppress(Exception):
                await reader.close()

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        """A write transaction (``write.begin()``): committed at the end, rolled back on error.

        On SQLite its end is awaited directly: commit, rollback and close run on the
        loop and never wait, so nothing can cancel them half-way, and the two tasks
        SQLAlchemy's context manager spawns to finish them (two loop turns each) are
        waste on the hot path. Elsewhere the end does wait (the network), and goes
        through SQLAlchemy's context manager, which a cancellation cannot interrupt.
        """
        if not self.is_sqlite:
            async with self.write.begin() as session:
                yield session
            return
        session = self.write()
        try:
            async with session.begin():
                yield session
        finally:
            await session.close()

    @asynccontextmanager
    async def migrating(self) -> AsyncIterator[AsyncEngine]:
        """The engine to migrate on. DDL, and the wait for another replica's migration, may
        take longer than a call may: on PostgreSQL with a timeout it is an engine of its own,
        without one."""
        if self.is_sqlite or self._timeout_seconds is None:
            yield self.write_engine
            return
        engine = create_async_engine(self.url, poolclass=NullPool)
        try:
            yield engine
        finally:
            await engine.dispose()

    def abandon(self) -> None:
        """Cut the connections held for reads at once, with no goodbye (a stop that ran
        out of time: the database may answer nothing). Their sockets close now rather
        than at exit, and the pool does not count them as checked out."""
        self._held.abandon()

    async def dispose(self) -> None:
        """Close every pooled connection."""
        self._direct_reader = None
        # After a read that holds the lock: one that was opening the reader (a thread
        # opens the file) would otherwise keep it, checked out of a pool nobody closes.
        async with self._reader_lock:
            if self._reader is not None:
                reader, self._reader = self._reader, None
                await reader.close()
        await self._held.close()
        await self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            await self.write_engine.dispose()


# Checkouts a held reader tries before giving up: more than the pool can hold.
_MOST_CHECKOUTS: Final = 10 + HELD_READERS + 20 + 1


class _HeldReaders:
    """PostgreSQL connections kept checked out of the pool for ``fetch_prepared``.

    Each runs one statement at a time through asyncpg directly, outside a transaction
    (asyncpg's default): no checkout, check-in, BEGIN or ROLLBACK per read. Up to
    ``size`` are opened as reads need them; a read waits for a free one beyond that. A
    connection that fails or is interrupted (an outage, a cancelled call) is closed and
    given back to the pool as invalid, and the next read opens another; one that asyncpg
    knows is closed (the server went away) is replaced before it is used.
    """

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self._engine = engine
        self._size = size
        self._open = 0
        self._idle: asyncio.Queue[tuple[AsyncConnection, Any]] = asyncio.Queue()
        self._all: set[AsyncConnection] = set()

    async def fetch(self, read: CompiledRead, arguments: Sequence[Any]) -> Sequence[Any]:
        """The records of ``read`` run on a held connection.

        A read that finds its connection gone (the server restarted, or ended it) runs
        once more on a fresh one: it is a read, and the database may well be up. The
        idle ones are then suspect too (the same server ended them): they go as well.
        """
        for last_try in (False, True):
            held, driver = await self._acquire()
            try:
                if read.processors is None:
                    # The column types asyncpg reports, as SQLAlchemy reads them from
                    # the cursor (asyncpg keeps the prepared statement for the fetch).
                    prepared = await driver.prepare(read.sql)
                    read.learn_types([a.type.oid for a in prepared.get_attributes()])
                records = await driver.fetch(read.sql, *arguments)
            except Exception as error:
                await self._discard(held)
                if last_try or not _connection_lost(error):
                    raise
                while not self._idle.empty():
                    await self._discard(self._idle.get_nowait()[0])
                continue
            except BaseException:
                await self._discard(held)  # interrupted mid-statement: not reusable
                raise
            self._idle.put_nowait((held, driver))
            return records  # type: ignore[no-any-return]
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acquire(self) -> tuple[AsyncConnection, Any]:
        while True:
            if self._idle.empty() and self._open < self._size:
                self._open += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._open -= 1
                    raise
            held, driver = await self._idle.get()
            if not driver.is_closed():
                return held, driver
            await self._discard(held)

    async def _connect(self) -> tuple[AsyncConnection, Any]:
        # A pooled connection used within the last second is not pinged on checkout
        # (_ping_when_idle): one kept for good is checked here, once, and a dead one
        # (the server ended it, and maybe its neighbours) makes way for the next.
        lost: Exception | None = None
        for _ in range(_MOST_CHECKOUTS):
            held = await self._engine.connect()
            self._all.add(held)
            driver = (await held.get_raw_connection()).driver_connection
            assert driver is not None
            try:
                await driver.fetchval("SELECT 1")
            except BaseException as error:
                self._open += 1  # _discard counts it out again
                await self._discard(held)
                if not isinstance(error, Exception) or not _connection_lost(error):
                    raise
                lost = error
                continue
            return held, driver
        # Its cause says what it is: the database cannot be reached (UNAVAILABLE).
        raise DisconnectionError("no live pooled connection to read on") from lost

    async def _discard(self, held: AsyncConnection) -> None:
        self._open -= 1
        self._all.discard(held)
        # Invalid: the pool closes it rather than hand it out again.
        with contextlib.suppress(Exception):
            await held.invalidate()
        with contextlib.suppress(Exception):
            await held.close()

    def abandon(self) -> None:
        """Terminate every held connection and give it back to the pool as invalid."""
        while self._all:
            held = self._all.pop()
            # Outside a greenlet SQLAlchemy terminates an asyncpg connection it invalidates
            # (the socket is closed, nothing is sent), so this needs no loop turn.
            with contextlib.suppress(Exception):
                held.sync_connection.invalidate()  # type: ignore[union-attr]
        self._open = 0
        self._idle = asyncio.Queue()

    async def close(self) -> None:
        """Give every held connection back (at shutdown)."""
        while self._all:
            held = self._all.pop()
            with contextlib.suppress(Exception):
                await held.close()
        self._open = 0
        self._idle = asyncio.Queue()


def _connection_lost(error: Exception) -> bool:
    """Whether asyncpg's ``error`` says the connection, not the statement, failed."""
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")
    if isinstance(error, TimeoutError):
        return False  # a hung server (the timeout): another try would only double the wait
    # InternalClientError: asyncpg's protocol state is broken (seen when the server ended
    # the connection while it sat idle).
    return isinstance(error, OSError | asyncpg.InterfaceError | asyncpg.InternalClientError)


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection before use only if it sat idle for a while.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout, and asyncpg's ping is three
    round trips (BEGIN, an empty query, ROLLBACK): more than the one-statement read it
    guards. A connection that was in use within ``PING_AFTER_IDLE_SECONDS`` is trusted;
    an older one is pinged, and one that fails is replaced before the caller sees it
    (a DisconnectionError makes the pool discard it and check out another). A server
    restart inside that window fails the calls already using its connections, as it
    would with a ping each: they answer UNAVAILABLE, and the pool starts afresh.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _connected(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(
        dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        last_used = record.info.get(_LAST_USED)
        if last_used is not None and time.monotonic() - last_used < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:
            raise DisconnectionError("the pooled connection is gone") from error


def loads_json(text: str) -> Any:
    """A JSON column's value: ``json.loads``, with the empty values most columns of a
    row hold (``{}``, ``[]``, ``null``) answered without the decoder. Each call returns
    a fresh object, as ``json.loads`` does (callers may change what they get)."""
    if text == "{}":
        return {}
    if text == "[]":
        return []
    if text == "null":
        return None
    return json.loads(text)


class _SQLiteCompiler(SQLiteCompiler):
    """SQLAlchemy's SQLite compiler, rendering FROM hints (``INDEXED BY <index>``, from
    ``Select.with_hint(..., dialect_name="sqlite")``), which it otherwise drops."""

    def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
        return text


def _sqlite_engine(url: str, *, immediate: bool, pool_size: int) -> AsyncEngine:
    path = make_url(url).database or ":memory:"
    engine = create_async_engine(
        url,
        # Statements run on the event loop (see sqlite_inline.py); a locked database is
        # waited for there, asynchronously, for up to the old 30 s busy timeout.
        async_creator=partial(connect_inline, path, SQLITE_BUSY_SECONDS),
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=60,
        json_deserializer=loads_json,
    )
    # Without statistics SQLite's planner can take the wrong index (the engine's claim
    # names the one it must use); set before the first statement is compiled.
    engine.dialect.statement_compiler = _SQLiteCompiler

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # 0: never block the loop on a lock; InlineConnection retries asynchronously.
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        if connection.get_execution_options().get(SINGLE_STATEMENTS):
            return  # each statement is its own transaction (Database.fetch)
        # On the driver's cursor: through exec_driver_sql, SQLAlchemy's execution context
        # cost several times the statement, on every write transaction.
        cursor = connection.connection.cursor()
        try:
            cursor.execute(begin)
        finally:
            cursor.close()

    return engine


def create_engine(url: str) -> AsyncEngine:
    """A single engine for one-off tools (migrations, bootstrap)."""
    return Database(url).write_engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded rows usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
