"""Remove stored objects that no image row references (crash leftovers), after a grace period."""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.blobs.base import BlobStore
from server.blobs.keys import project_prefix
from server.domain.clock import utcnow
from server.engine.periodic import Periodic
from server.store.db import Database
from server.store.models import ImageRow, ProjectRow
from server.store.outages import Dependencies

log = structlog.get_logger("imagegen.sweeper")

# Any number works; it names "the sweep" among PostgreSQL advisory locks.
SWEEP_LOCK = 7283520


class Sweeper:
    """Deletes unreferenced objects older than ``grace`` (younger ones may be writes in flight).

    A worker writes an object before the commit that makes a row point at it,
    so an object without a row is either in flight or left by a crash; the grace
    period tells them apart. On PostgreSQL one replica sweeps at a time.
    """

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        grace: timedelta,
        interval: float,
        dependencies: Dependencies | None = None,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._grace = grace
        self._periodic = Periodic("sweep", interval, self.sweep, dependencies or Dependencies())

    def start(self) -> None:
        """Sweep now and then every ``interval`` seconds, in the background."""
        self._periodic.start()

    async def stop(self) -> None:
        """Stop sweeping (an unfinished sweep is simply abandoned)."""
        await self._periodic.stop()

    def abandon(self) -> None:
        """Cancel its tasks without waiting for them (a stop that ran out of time)."""
        self._periodic.abandon()

    async def sweep(self) -> int:
        """One pass over every project's objects; returns how many were deleted."""
        async with self._db.read() as session, session.begin():
            if not self._db.is_sqlite:
                got = await session.scalar(
                    text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK}
                )
                if not got:
                    return 0  # another replica is sweeping
            projects = list((await session.scalars(select(ProjectRow.id))).all())
            deleted = 0
            for project_id in projects:
                deleted += await self._sweep_project(session, project_id)
        if deleted:
            log.info("swept", objects=deleted)
        return deleted

    async def _sweep_project(self, session: AsyncSession, project_id: str) -> int:
        cutoff = utcnow() - self._grace
        # Listed first, rows read second: a row committed in between only makes
        # us keep an object, never delete a referenced one.
        candidates = [
            info.key
            async for info in self._blobs.list(project_prefix(project_id))
            if info.last_modified <= cutoff
        ]
        if not candidates:
            return 0
        referenced = set(
            (
                await session.scalars(
                    select(ImageRow.object_key).where(ImageRow.project_id == project_id)
                )
            ).all()
        )
        orphans = [key for key in candidates if key not in referenced]
        if orphans:
            await self._blobs.delete_many(orphans)
        return len(orphans)
