"""Watch use cases: the current state, then every change in order, from the per-process fan-out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from server.domain.errors import DomainError, Status, invalid, not_found
from server.domain.generations import from_snapshot
from server.domain.ids import require_uuid
from server.domain.lifecycle import GenerationStatus
from server.events.fanout import (
    PROJECT_BATCH,
    Fanout,
    GenerationChannel,
    WatcherOverflowError,
    WatchEvent,
    loaded,
)
from server.events.hub import EventHub
from server.store import outbox
from server.store.db import Database
from server.store.models import GenerationEventRow

__all__ = ["WatchEvent", "Watches"]


def _event(row: GenerationEventRow) -> WatchEvent:
    return WatchEvent(row.type, from_snapshot(row.snapshot), row.revision, row.seq)


def _present(row: GenerationEventRow) -> WatchEvent:
    """A generation's latest row as the snapshot it stands for (a deletion stays one)."""
    event = _event(row)
    return event if event.type == "deleted" else event.as_snapshot()


class OutboxReads:
    """The fan-out's reads, over the database (one short read transaction each)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def latest(self, generation_id: str) -> WatchEvent | None:
        async with self._db.read() as session:
            row = await outbox.latest_event(session, generation_id)
            return None if row is None else _event(row)

    async def generation_after(self, generation_id: str, revision: int) -> list[WatchEvent]:
        async with self._db.read() as session:
            return [_event(r) for r in await outbox.events_after(session, generation_id, revision)]

    async def project_head(self, project_id: str) -> int:
        async with self._db.read() as session:
            return await outbox.project_head(session, project_id)

    async def project_after(self, project_id: str, seq: int, limit: int) -> list[WatchEvent]:
        async with self._db.read() as session:
            rows = await outbox.project_events_after(session, project_id, seq, limit)
            return [_event(r) for r in rows]

    async def pruned_through(self, project_id: str) -> int:
        async with self._db.read() as session:
            return await outbox.pruned_through(session, project_id)

    async def project_present_after(
        self, project_id: str, seq: int, limit: int
    ) -> list[WatchEvent]:
        async with self._db.read() as session:
            rows = await outbox.project_present_after(session, project_id, seq, limit)
            return [_present(r) for r in rows]

    async def heads(
        self, generation_ids: Iterable[str], project_ids: Iterable[str]
    ) -> tuple[dict[str, int], dict[str, int]]:
        async with self._db.read() as session:
            return await outbox.heads(session, generation_ids, project_ids)


def too_slow(field: str, last: str) -> DomainError:
    """The status that ends a watcher whose queue overflowed: resume from what it saw."""
    return DomainError(
        Status.ABORTED,
        "WATCH_TOO_SLOW",
        f"the stream fell too far behind; reopen it with {field}={last} to go on without a gap",
        metadata={"resume_field": field, "resume_from": last},
    )


class Watches:
    """Streams of generation states; every change is read once per process by the fan-out."""

    def __init__(
        self, db: Database, hub: EventHub, *, queue_limit: int = 256, poll_seconds: float = 2.0
    ) -> None:
        self._reads = OutboxReads(db)
        self.fanout = Fanout(self._reads, queue_limit=queue_limit, poll_seconds=poll_seconds)
        hub.add_listener(self.fanout)

    def start(self) -> None:
        """Start reading changes (the dispatcher and the safety-net poller)."""
        self.fanout.start()

    async def stop(self) -> None:
        """Stop reading changes."""
        await self.fanout.stop()

    def abandon(self) -> None:
        """Cancel its tasks without waiting for them (a stop that ran out of time)."""
        self.fanout.abandon()

    async def generation(
        self, project_id: str, generation_id: str, since_revision: int, follow: bool
    ) -> AsyncIterator[WatchEvent]:
        """The current state (unless already seen), then every change, until terminal or deleted."""
        generation_id = require_uuid("id", generation_id)
        if since_revision < 0:
            raise invalid("since_revision", "must not be negative")
        channel, watcher = self.fanout.attach_generation(generation_id)
        try:
            await loaded(channel)
            latest = channel.latest
            if latest is None:
                # Maybe created on another replica a moment ago: ask the database.
                await self.fanout.refresh(channel)
                latest = channel.latest
            if (
                latest is None
                or latest.generation.project_id != project_id
                or latest.type == "deleted"
            ):
                raise not_found("generation", generation_id)
            if since_revision > latest.revision:
                # The caller saw more than this process has read yet: catch up first.
                await self.fanout.refresh(channel)
                latest = channel.latest or latest
            last = since_revision
            if latest.revision > since_revision:
                first = await self._first_events(channel, latest, since_revision)
            else:
                first = []
            terminal = latest.generation.status.terminal
            for event in first:
                yield event
                last = event.revision
                if event.type == "deleted":
                    return
                terminal = event.generation.status.terminal
            if terminal and not follow and last >= latest.revision:
                return
            while True:
                try:
                    queued = watcher.take()
                    while queued is None:
                        await watcher.arrival()  # a bare future: no coroutine per idle stream
                        queued = watcher.take()
                except WatcherOverflowError:
                    raise too_slow("since_revision", str(last)) from None
                event = queued
                if event.revision <= last:
                    continue  # already sent (from the replay above)
                yield event
                last = event.revision
                if event.type == "deleted":
                    return
                if event.generation.status.terminal and not follow:
                    return
        finally:
            self.fanout.detach_generation(channel, watcher)

    async def _first_events(
        self, channel: GenerationChannel, latest: WatchEvent, since_revision: int
    ) -> list[WatchEvent]:
        """What a new watcher is sent first: a snapshot, or the changes after since_revision."""
        if since_revision == 0:
            return [channel.snapshot()]
        history = channel.history_after(since_revision)
        if history is not None:
            return history
        events = await self._reads.generation_after(latest.generation.id, since_revision)
        if not events or events[0].revision != since_revision + 1:
            # The revisions right after since_revision were pruned: the present is all we have.
            newest = events[-1] if events else latest
            return [newest.as_snapshot()]
        return events

    async def project(
        self,
        project_id: str,
        *,
        flow_id: str = "",
        status: GenerationStatus | None = None,
        since_cursor: str = "",
        started: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Every change of the project's generations after ``since_cursor`` (or from now on).

        ``started`` is awaited once the watch has its starting point: every change
        committed after that comes (the caller's headers go then, api/streams.py)."""
        flow = require_uuid("flow_id", flow_id) if flow_id else None
        # Cursors are BIGINT sequence numbers: decimal ASCII digits below 2**63.
        if since_cursor and not (
            len(since_cursor) <= 19
            and since_cursor.isascii()
            and since_cursor.isdigit()
            and int(since_cursor) < 2**63
        ):
            raise invalid("since_cursor", "is not a cursor from this service", "INVALID_CURSOR")

        def wanted(event: WatchEvent) -> bool:
            return (flow is None or event.generation.flow_id == flow) and (
                status is None or event.generation.status == status
            )

        cursor = int(since_cursor) if since_cursor else -1
        if 0 <= cursor < await self._reads.pruned_through(project_id):
            # Behind retention: events after the cursor may be gone, so what is left of
            # them would be a misleading history. Send the present instead: a snapshot
            # of every generation changed since the cursor (a deletion as itself).
            async for event in _pages(self._reads.project_present_after, project_id, cursor):
                cursor = event.seq
                if wanted(event):
                    yield event
        if cursor >= 0:
            # A long backlog is replayed from the database before joining the live stream,
            # so the live queue does not overflow meanwhile.
            async for event in _pages(self._reads.project_after, project_id, cursor):
                cursor = event.seq
                if wanted(event):
                    yield event
        channel, watcher = self.fanout.attach_project(project_id, wanted)
        try:
            await loaded(channel)
            if started is not None:
                await started()
            if cursor < 0:
                cursor = channel.cursor  # from now on
            else:
                # What committed between the replay and joining.
                async for event in _pages(self._reads.project_after, project_id, cursor):
                    cursor = event.seq
                    if wanted(event):
                        yield event
            while True:
                try:
                    queued = watcher.take()
                    while queued is None:
                        await watcher.arrival()
                        queued = watcher.take()
                except WatcherOverflowError:
                    raise too_slow("since_cursor", str(cursor)) from None
                event = queued
                if event.seq <= cursor:
                    continue
                cursor = event.seq
                yield event
        finally:
            self.fanout.detach_project(channel, watcher)


async def _pages(
    read: Callable[[str, int, int], Awaitable[list[WatchEvent]]], project_id: str, after: int
) -> AsyncIterator[WatchEvent]:
    """Every event ``read`` finds after sequence number ``after``, a page at a time, in order."""
    while True:
        events = await read(project_id, after, PROJECT_BATCH)
        for event in events:
            after = event.seq
            yield event
        if len(events) < PROJECT_BATCH:
            return
