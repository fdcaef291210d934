"""Dependency outages: which errors mean the database or the object store is unreachable,
whether the process is ready, and one log line per outage (with a count), not one per call.

The object store's own errors say so (DependencyUnavailableError); the database's are told
apart here, where the driver is known."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import asyncpg
import sqlalchemy.exc
import structlog
from sqlalchemy import text

from server.domain.outages import DATABASE, DependencyUnavailableError
from server.domain.tasks import cancel_and_wait
from server.store.db import Database

log = structlog.get_logger("imagegen.dependencies")

# While an outage lasts, a reminder with the running count this often.
REMINDER_SECONDS: Final = 60.0
# How long one probe may take before the dependency counts as down.
PROBE_TIMEOUT_SECONDS: Final = 5.0
# SQLSTATEs that mean the connection, not the statement, failed: class 08 (connection
# exception), the server shutting down or starting up (57P01 admin shutdown, 57P02 crash
# shutdown, 57P03 cannot connect now) and no connection slot free (53300).
_CONNECTION_SQLSTATE_CLASS: Final = "08"
_CONNECTION_SQLSTATES: Final = frozenset({"57P01", "57P02", "57P03", "53300"})
# SQLite's primary result codes that mean the file cannot be used at all (as opposed to a
# bad statement, a constraint, or SQLITE_BUSY/LOCKED contention, which sqlite_inline.py
# waits out with backoff).
_SQLITE_OUTAGE_CODES: Final = frozenset({sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR})
# Raw socket errors and connect timeouts count as the database's when its driver or pool
# raised them: asyncpg lets them through as they are.
_DRIVER_MODULES = ("asyncpg", "sqlalchemy", "aiosqlite")
# How far down the chain of causes to look.
_CHAIN_DEPTH: Final = 8


def outage_of(error: BaseException) -> str | None:
    """``DATABASE`` or ``OBJECT_STORE`` if ``error`` (or what caused it) means that
    dependency cannot be reached; None for any other error.

    Decided by what the error is, not by its wrapper's class: SQLAlchemy calls both a
    refused connection and a malformed statement "OperationalError". A database that
    answered with a SQLSTATE outside the connection classes (a constraint, a syntax or
    data error, a serialization failure) is reachable, so that is not an outage.
    """
    current: BaseException | None = error
    for _ in range(_CHAIN_DEPTH):
        if current is None:
            return None
        if isinstance(current, DependencyUnavailableError) and current.dependency:
            return current.dependency
        verdict = _database_verdict(current)
        if verdict is not None:
            return DATABASE if verdict else None
        current = current.__cause__ or current.__context__
    return None


def _database_verdict(error: BaseException) -> bool | None:
    """True: the database cannot be reached; False: it answered (not an outage);
    None: this error does not say (look at its cause)."""
    sqlstate = _sqlstate(error)
    if sqlstate is not None:
        return sqlstate.startswith(_CONNECTION_SQLSTATE_CLASS) or sqlstate in _CONNECTION_SQLSTATES
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_OUTAGE_CODES
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True  # the driver said the connection is gone (SQLAlchemy's is_disconnect)
    if isinstance(error, sqlalchemy.exc.TimeoutError):
        return True  # no pooled connection came free in time: the database hangs
    if isinstance(error, asyncpg.InterfaceError):
        # "connection is closed" is an outage; other misuse of a connection is a bug.
        return "connection is closed" in str(error) or None
    if isinstance(error, OSError | TimeoutError) and _raised_in_driver(error):
        return True  # refused, reset, no such host or socket file, connect timed out
    return None


def _sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE a PostgreSQL driver attached to ``error`` (asyncpg and psycopg call it
    ``sqlstate``, SQLAlchemy's asyncpg adapter ``pgcode`` too), if any."""
    for name in ("sqlstate", "pgcode"):
        value = getattr(error, name, None)
        if isinstance(value, str) and len(value) == 5:
            return value
    return None


def _raised_in_driver(error: BaseException) -> bool:
    frame = error.__traceback__
    while frame is not None:
        module = str(frame.tb_frame.f_globals.get("__name__", ""))
        if module.split(".", 1)[0] in _DRIVER_MODULES:
            return True
        frame = frame.tb_next
    return False


@dataclass
class Outage:
    """One dependency's current outage: since when, how many failures, and why."""

    since: float
    error: str
    failures: int = 1
    reminded: float = field(default=0.0)


Probe = Callable[[], Awaitable[None]]


class ErrorLogger(Protocol):
    """What ``Dependencies.report`` needs of a logger (a structlog logger has it)."""

    def error(self, event: str, **kw: Any) -> Any:
        """Log ``event`` at error level."""


class Dependencies:
    """Tracks outages of the process's dependencies and whether it is ready to serve.

    Calls and workers report failures (``failed``); a background task probes each
    dependency every ``interval`` seconds and ends an outage when the probe passes.
    The first failure of an outage is logged once; the recovery is logged with the
    number of failures and the duration. ``on_change`` hears every change of readiness
    (the gRPC health status follows it).
    """

    def __init__(
        self,
        probes: Mapping[str, Probe] | None = None,
        *,
        interval: float = 2.0,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self._probes = dict(probes or {})
        self._interval = interval
        self._on_change = on_change
        self._outages: dict[str, Outage] = {}
        self._draining = False
        self._ready_reported: bool | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopped = False

    @property
    def ready(self) -> bool:
        """No known outage, and not draining."""
        return not self._outages and not self._draining

    def down(self, dependency: str) -> bool:
        """Whether ``dependency`` is in an outage now."""
        return dependency in self._outages

    def report(self, error: BaseException, logger: ErrorLogger, event: str, **context: str) -> None:
        """A failure of background work: an outage of a dependency is counted here (logged
        once per outage); anything else is logged by ``logger`` as ``event`` with its
        traceback."""
        dependency = outage_of(error)
        if dependency is None:
            logger.error(event, exc_info=error, **context)
        else:
            self.failed(dependency, error)

    def failed(self, dependency: str, error: BaseException) -> None:
        """Record a failure caused by ``dependency`` being unreachable."""
        outage = self._outages.get(dependency)
        now = time.monotonic()
        if outage is None:
            self._outages[dependency] = Outage(since=now, error=_short(error), reminded=now)
            log.warning("dependency_unavailable", dependency=dependency, error=_short(error))
            self._wake.set()  # probe soon, and tell health
        else:
            outage.failures += 1
            if now - outage.reminded >= REMINDER_SECONDS:
                outage.reminded = now
                log.warning(
                    "dependency_still_unavailable",
                    dependency=dependency,
                    failures=outage.failures,
                    seconds=round(now - outage.since, 1),
                )

    def recovered(self, dependency: str) -> None:
        """End ``dependency``'s outage, if any, logging how long it lasted."""
        outage = self._outages.pop(dependency, None)
        if outage is not None:
            log.info(
                "dependency_recovered",
                dependency=dependency,
                failures=outage.failures,
                seconds=round(time.monotonic() - outage.since, 1),
            )

    async def drain(self) -> None:
        """Not ready from now on (shutdown has begun)."""
        self._draining = True
        await self._report()

    def start(self) -> None:
        """Start probing in the background."""
        self._task = asyncio.create_task(self._run(), name="dependency-probes")

    async def stop(self) -> None:
        """Stop probing."""
        # A flag as well as the cancel: on Python 3.11 a cancel that lands as a probe
        # finishes can be swallowed, and the loop must still end.
        self._stopped = True
        self._wake.set()
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def check(self) -> bool:
        """Probe every dependency once now; returns readiness."""
        for dependency, probe in self._probes.items():
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                    await probe()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.failed(dependency, error)
            else:
                self.recovered(dependency)
        await self._report()
        return self.ready

    async def _run(self) -> None:
        while not self._stopped:
            await self.check()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()

    async def _report(self) -> None:
        ready = self.ready
        if ready != self._ready_reported:
            self._ready_reported = ready
            if self._on_change is not None:
                await self._on_change(ready)


def database_probe(db: Database) -> Probe:
    """SELECT 1 on a reader connection."""

    async def probe() -> None:
        async with db.read() as session:
            await session.execute(text("SELECT 1"))

    return probe


def _short(error: BaseException) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}"[:300]
