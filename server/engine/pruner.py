"""Retention: outbox events, idempotency keys and finished webhook deliveries are deleted
once older than their settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from server.engine.periodic import Periodic
from server.store.db import Database
from server.store.generations import prune_events
from server.store.idempotency import prune_request_ids
from server.store.outages import Dependencies
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
        self._periodic = Periodic("prune", interval, self.prune, dependencies or Dependencies())

    def start(self) -> None:
        """Prune now and then every ``interval`` seconds, in the background."""
        self._periodic.start()

    async def stop(self) -> None:
        """Stop (an unfinished prune is abandoned; its committed batches stay deleted)."""
        await self._periodic.stop()

    def abandon(self) -> None:
        """Cancel its tasks without waiting for them (a stop that ran out of time)."""
        self._periodic.abandon()

    async def prune(self, now: datetime | None = None) -> Pruned:
        """One pass; returns how many of each it deleted."""
        now = now or datetime.now(UTC)
        events_before = now - self._event_retention
        events = await self._in_batches(lambda s, n: prune_events(s, events_before, n))
        async with self._db.write.begin() as session:
            request_ids = await prune_request_ids(session, now - self._request_id_retention)
        deliveries_before = now - self._delivery_retention
        deliveries = await self._in_batches(lambda s, n: prune_deliveries(s, deliveries_before, n))
        if events or request_ids or deliveries:
            log.info("pruned", events=events, request_ids=request_ids, deliveries=deliveries)
        return Pruned(events, request_ids, deliveries)

    async def _in_batches(self, delete: Callable[[AsyncSession, int], Awaitable[int]]) -> int:
        # One short transaction per BATCH rows, however large the backlog.
        total = 0
        while True:
            async with self._db.write.begin() as session:
                deleted = await delete(session, BATCH)
            total += deleted
            if deleted < BATCH or self._periodic.stopping.is_set():
                return total
