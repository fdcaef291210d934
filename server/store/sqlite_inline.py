"""An aiosqlite connection that runs each SQLite call on the event loop, not on its thread.

aiosqlite hands every call (cursor, execute, fetch, close, commit) to a thread of its
own and back: a handful of thread hops and GIL hand-offs per statement, which cost
far more than the statement itself (an indexed read of a local file takes
microseconds). This subclass keeps aiosqlite's API, which SQLAlchemy's ``aiosqlite``
dialect drives, but runs each call inline.

The one way an inline call could block the loop is a lock held by another connection
(another process, or another App in this one). So the connection's busy timeout is 0,
and a statement that finds the database locked (SQLITE_BUSY/LOCKED, raised before it
had any effect) is retried here after an asynchronous sleep, with backoff, until
``busy_seconds`` have passed — waiting without blocking anyone else.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Final

import aiosqlite

_BUSY_CODES: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
# Only these calls are restartable after SQLITE_BUSY: the statement did nothing yet.
_RESTARTABLE: Final = frozenset({"execute", "executemany"})
_FIRST_WAIT_SECONDS: Final = 0.001
_MAX_WAIT_SECONDS: Final = 0.05


class InlineConnection(aiosqlite.Connection):
    """aiosqlite's Connection with its calls run on the caller's thread (the event loop)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], busy_seconds: float) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._busy_seconds = busy_seconds

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or getattr(fn, "__name__", "") not in _RESTARTABLE:
                raise
        return await self._retry_busy(fn, *args, **kwargs)

    @property
    def sqlite(self) -> sqlite3.Connection | None:
        """The open sqlite3 connection itself (None once closed), for callers that run a
        statement synchronously on the loop and fall back to ``execute`` when it is busy."""
        return self._connection if self._running else None

    async def _retry_busy(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self._busy_seconds
        wait = _FIRST_WAIT_SECONDS
        while True:
            await asyncio.sleep(wait)
            wait = min(wait * 2, _MAX_WAIT_SECONDS)
            if not self._running or not self._connection:
                raise ValueError("Connection closed")
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or time.monotonic() >= deadline:
                    raise


def is_busy(error: sqlite3.OperationalError) -> bool:
    """Whether ``error`` is SQLITE_BUSY/LOCKED: raised before the statement had any effect."""
    return _is_busy(error)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return (getattr(error, "sqlite_errorcode", 0) & 0xFF) in _BUSY_CODES


async def connect_inline(path: str, busy_seconds: float) -> InlineConnection:
    """Open ``path`` (busy timeout 0: waits happen here, asynchronously) for use on the loop."""

    def connector() -> sqlite3.Connection:
        # Opened on aiosqlite's thread, used on the loop's: hence check_same_thread.
        return sqlite3.connect(path, timeout=0, check_same_thread=False)

    connection = InlineConnection(connector, busy_seconds)
    # aiosqlite's thread opens the connection and then idles; it must not keep the
    # interpreter alive at exit.
    connection._thread.daemon = True
    await connection  # starts aiosqlite's thread, which opens the file
    return connection
