"""Retention: outbox events, idempotency keys and finished webhook deliveries are deleted
once older than their settings."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import structlog

from server.store.db import Database
from server.store.generations import prune_events
from server.store.idempotency import prune_request_ids
from server.store.outages import Dependencies, outage_of
from server.store.webhooks import prune_deliveries

log = structlog.get_logger("imagegen.pruner")

# Rows deleted per transaction: short transactions, whatever the backlog.
BATCH = 5000


class Pruned(NamedTuple):
    """What one pass deleted."""

    events: int
    request_ids: int
    deliveries: int


class Pruner:
    """Every ``interval`` seconds, deletes events older than ``event_retention`` (but never
    a generation's latest), request_ids older than ``request_id_retention`` and finished
    webhook deliveries older than ``delivery_retention``."""

    def __init__(
        self,
        db: Database,
        *,
        event_retention: timedelta,
        request_id_retention: timedelta,
        interval: float,
        delivery_retention: timedelta = timedelta(days=30),
        dependencies: Dependencies | None = None,
    ) -> None:
        self._db = db
        self._event_retention = event_retention
        self._request_id_retention = request_id_retention
        self._delivery_retention = delivery_retention
        self._interval = interval
        self._dependencies = dependencies or Dependencies()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Prune now and then every ``interval`` seconds, in the background."""
        self._task = asyncio.create_task(self._loop(), name="pruner")

    async def stop(self) -> None:
        """Stop (an unfinished prune is abandoned; its committed batches stay deleted)."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.prune()
            except Exception as error:
                dependency = outage_of(error)
                if dependency is None:
                    log.exception("prune_failed")
                else:
                    self._dependencies.failed(dependency, error)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stopping.wait()

    async def prune(self, now: datetime | None = None) -> Pruned:
        """One pass; returns how many of each it deleted."""
        now = now or datetime.now(UTC)
        events = 0
        while True:
            async with self._db.write.begin() as session:
                deleted = await prune_events(session, now - self._event_retention, BATCH)
            events += deleted
            if deleted < BATCH or self._stopping.is_set():
                break
        async with self._db.write.begin() as session:
            request_ids = await prune_request_ids(session, now - self._request_id_retention)
        deliveries = 0
        while True:
            async with self._db.write.begin() as session:
                deleted = await prune_deliveries(session, now - self._delivery_retention, BATCH)
            deliveries += deleted
            if deleted < BATCH or self._stopping.is_set():
                break
        if events or request_ids or deliveries:
            log.info("pruned", events=events, request_ids=request_ids, deliveries=deliveries)
        return Pruned(events, request_ids, deliveries)
