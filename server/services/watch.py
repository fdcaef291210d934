"""Watch use cases: replay and follow generation changes from the outbox, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.errors import invalid, not_found
from server.domain.generations import Generation, from_snapshot
from server.domain.ids import require_uuid
from server.domain.lifecycle import GenerationStatus
from server.events.hub import EventHub, generation_key, project_key
from server.store.db import Database
from server.store.generation_queries import get_generation_row
from server.store.models import GenerationEventRow

PROJECT_BATCH = 200


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One state sent to a watcher: "snapshot", "created", "updated" or "deleted"."""

    type: str
    generation: Generation
    revision: int
    cursor: str


def _event(row: GenerationEventRow, type_: str | None = None) -> WatchEvent:
    return WatchEvent(type_ or row.type, from_snapshot(row.snapshot), row.revision, str(row.seq))


class Watches:
    """Streams of generation states, driven by the outbox and woken by the hub."""

    def __init__(self, db: Database, hub: EventHub, poll_interval: float) -> None:
        self._db = db
        self._hub = hub
        # Without a wake-up (a change made by another replica), look anyway this often.
        self._poll = max(poll_interval, 0.05)

    async def generation(
        self, project_id: str, generation_id: str, since_revision: int, follow: bool
    ) -> AsyncIterator[WatchEvent]:
        """The current state (unless already seen), then every change, until terminal or deleted."""
        generation_id = require_uuid("id", generation_id)
        if since_revision < 0:
            raise invalid("since_revision", "must not be negative")
        with self._hub.subscribe(generation_key(generation_id)) as subscription:
            async with self._db.read() as session:
                if await get_generation_row(session, project_id, generation_id) is None:
                    raise not_found("generation", generation_id)
                first = await self._first_events(session, generation_id, since_revision)
            last = since_revision
            terminal = False
            for event in first:
                yield event
                last = event.revision
                if event.type == "deleted":
                    return
                terminal = event.generation.status.terminal
            if terminal and not follow:
                return
            if not first and not follow and await self._is_terminal(generation_id):
                return
            while True:
                await subscription.wait(self._poll)
                async with self._db.read() as session:
                    rows = await _events_after(session, generation_id, last)
                for row in rows:
                    event = _event(row)
                    yield event
                    last = event.revision
                    if event.type == "deleted":
                        return
                    if event.generation.status.terminal and not follow:
                        return

    async def _first_events(
        self, session: AsyncSession, generation_id: str, since_revision: int
    ) -> list[WatchEvent]:
        latest = await session.scalar(
            select(GenerationEventRow)
            .where(GenerationEventRow.generation_id == generation_id)
            .order_by(GenerationEventRow.revision.desc())
            .limit(1)
        )
        if latest is None or latest.revision <= since_revision:
            return []
        if since_revision == 0:
            return [_event(latest, "snapshot")]
        rows = await _events_after(session, generation_id, since_revision)
        if not rows or rows[0].revision != since_revision + 1:
            # The revisions right after since_revision were pruned: the present is all we have.
            return [_event(latest, "snapshot")]
        return [_event(row) for row in rows]

    async def _is_terminal(self, generation_id: str) -> bool:
        async with self._db.read() as session:
            status = await session.scalar(
                select(GenerationEventRow.status)
                .where(GenerationEventRow.generation_id == generation_id)
                .order_by(GenerationEventRow.revision.desc())
                .limit(1)
            )
        return status is not None and GenerationStatus(status).terminal

    async def project(
        self,
        project_id: str,
        *,
        flow_id: str = "",
        status: GenerationStatus | None = None,
        since_cursor: str = "",
    ) -> AsyncIterator[WatchEvent]:
        """Every change of the project's generations after ``since_cursor`` (or from now on)."""
        flow = require_uuid("flow_id", flow_id) if flow_id else None
        if since_cursor and not since_cursor.isdigit():
            raise invalid("since_cursor", "is not a cursor from this service", "INVALID_CURSOR")
        with self._hub.subscribe(project_key(project_id)) as subscription:
            if since_cursor:
                cursor = int(since_cursor)
            else:
                async with self._db.read() as session:
                    cursor = int(
                        await session.scalar(
                            select(func.coalesce(func.max(GenerationEventRow.seq), 0)).where(
                                GenerationEventRow.project_id == project_id
                            )
                        )
                        or 0
                    )
            while True:
                async with self._db.read() as session:
                    query = (
                        select(GenerationEventRow)
                        .where(
                            GenerationEventRow.project_id == project_id,
                            GenerationEventRow.seq > cursor,
                        )
                        .order_by(GenerationEventRow.seq)
                        .limit(PROJECT_BATCH)
                    )
                    if flow:
                        query = query.where(GenerationEventRow.flow_id == flow)
                    rows = (await session.scalars(query)).all()
                for row in rows:
                    cursor = row.seq
                    if status is None or row.status == status.value:
                        yield _event(row)
                if len(rows) < PROJECT_BATCH:
                    await subscription.wait(self._poll)


async def _events_after(
    session: AsyncSession, generation_id: str, revision: int
) -> Sequence[GenerationEventRow]:
    result = await session.scalars(
        select(GenerationEventRow)
        .where(
            GenerationEventRow.generation_id == generation_id,
            GenerationEventRow.revision > revision,
        )
        .order_by(GenerationEventRow.revision)
    )
    return result.all()
