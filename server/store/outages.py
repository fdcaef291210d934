"""Dependency outages: which errors mean the database or the object store is unreachable,
whether the process is ready, and one log line per outage (with a count), not one per call.

The object store's own errors say so (DependencyUnavailableError); the database's are told
apart here, where the driver is known."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import asyncpg
import sqlalchemy.exc
import structlog
from sqlalchemy import text

from server.domain.outages import DATABASE, DependencyUnavailableError
from server.store.db import Database

log = structlog.get_logger("imagegen.dependencies")

# While an outage lasts, a reminder with the running count this often.
REMINDER_SECONDS: Final = 60.0
# How long one probe may take before the dependency counts as down.
PROBE_TIMEOUT_SECONDS: Final = 5.0
# Errors of the database driver and pool that mean "cannot reach it" rather than a bad query.
_DATABASE_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection came free: the database hangs
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
)
# Raw socket errors (refused, reset, no socket file, no such host, timed out) count as
# the database's when its driver or pool raised them: asyncpg lets them through as they are.
_DRIVER_MODULES = ("asyncpg", "sqlalchemy", "aiosqlite")


def outage_of(error: BaseException) -> str | None:
    """``DATABASE`` or ``OBJECT_STORE`` if ``error`` (or what caused it) means that
    dependency cannot be reached; None for any other error."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 8:
        if isinstance(current, DependencyUnavailableError) and current.dependency:
            return current.dependency
        if isinstance(current, _DATABASE_ERRORS):
            return DATABASE
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return DATABASE
        if isinstance(current, OSError | socket.gaierror) and _raised_in_driver(current):
            return DATABASE
        current = current.__cause__ or current.__context__
        seen += 1
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
