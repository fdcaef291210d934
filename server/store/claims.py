"""Work claiming with leases: take the oldest due generation, renew, finish, release."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.generations import EventType, Generation, GenerationStatus
from server.store.generations import generation_from_row, record_event
from server.store.models import GenerationRow


@dataclass(frozen=True, slots=True)
class Claim:
    """A generation a worker now holds, and the token that proves it."""

    generation: Generation
    token: str


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        GenerationRow.status == GenerationStatus.PENDING.value,
        and_(
            GenerationRow.status == GenerationStatus.PROCESSING.value,
            GenerationRow.lease_expire_time < now,
        ),
    )


async def claim_next(
    session: AsyncSession, now: datetime, lease: timedelta, token: str, *, skip_locked: bool
) -> Claim | None:
    """Mark the oldest due generation PROCESSING under ``token`` (inside the caller's transaction).

    Due means PENDING, or PROCESSING with an expired lease (its worker died).
    On PostgreSQL, SKIP LOCKED lets many replicas claim side by side; on
    SQLite the writer lock already makes the claim exclusive.
    """
    query = select(GenerationRow).where(_due(now)).order_by(GenerationRow.create_time).limit(1)
    if skip_locked:
        query = query.with_for_update(skip_locked=True)
    row = await session.scalar(query)
    if row is None:
        return None
    row.status = GenerationStatus.PROCESSING.value
    row.lease_token = token
    row.lease_expire_time = now + lease
    row.attempt += 1
    row.start_time = now
    row.complete_time = None
    row.error_code = None
    row.error_message = None
    row.revision += 1
    row.update_time = now
    await session.flush()
    generation = await generation_from_row(session, row)
    await record_event(session, generation, EventType.UPDATED, now)
    return Claim(generation, token)


async def renew_lease(
    session: AsyncSession, generation_id: str, token: str, expire: datetime
) -> bool:
    """Extend a held lease; False if the lease was lost (re-claimed, restarted or deleted)."""
    result = await session.execute(
        update(GenerationRow)
        .where(GenerationRow.id == generation_id, GenerationRow.lease_token == token)
        .values(lease_expire_time=expire)
    )
    return bool(getattr(result, "rowcount", 0))


async def held_row(session: AsyncSession, generation_id: str, token: str) -> GenerationRow | None:
    """The generation row if ``token`` still holds it (the compare-and-set of finishing)."""
    result: GenerationRow | None = await session.scalar(
        select(GenerationRow)
        .where(GenerationRow.id == generation_id, GenerationRow.lease_token == token)
        .with_for_update()
    )
    return result


async def release_lease(
    session: AsyncSession, generation_id: str, token: str, now: datetime
) -> None:
    """Hand a generation back so any worker may take it at once (status stays PROCESSING)."""
    await session.execute(
        update(GenerationRow)
        .where(GenerationRow.id == generation_id, GenerationRow.lease_token == token)
        .values(lease_expire_time=now)
    )


async def due_count(session: AsyncSession, now: datetime) -> int:
    """How many generations wait for a worker (queue depth)."""
    count = await session.scalar(select(func.count()).select_from(GenerationRow).where(_due(now)))
    return int(count or 0)
